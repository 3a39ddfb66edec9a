"""Loading with sstableloader on the nodes, into another topology: which node fetches and streams which
SSTables (balanced by bytes, every component of an SSTable together) and each node's one folder per
table, under the table's fresh, collision-free generations."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dmf.blocks.cassandra_cluster import CassandraCluster, tool_beside
from dmf.core.node_load import NodeTableLoad, descriptor, loader_shares, renumbered
from dmf.loader import stream_staged
from dmf.restore_plan import TableLoad, worker_tables
from dmf.ssh import RemoteError

from .test_node_commands import LocalHost
from .test_node_restore_plan import F

ROOT = Path("/restore")
SNAPSHOT = "20250101120000"
UUID_ID = "3gxb_0vpo_2z2pc2h8c5ljywr9d8"


@dataclass(frozen=True)
class T:
    keyspace: str
    table: str
    links: tuple[tuple[Path, str], ...]


def folder(host: str, set_name: str = "full", table: str = "t") -> Path:
    return ROOT / SNAPSHOT / host / set_name / "ks" / table


def table_load(table: str, sets: dict[Path, dict[str, int]]) -> tuple[T, list[F]]:
    """A table's files (name → size, per downloaded folder) and its load, renumbered as the plan does."""
    fetches, links, generation = [], [], 0
    for directory, files in sets.items():
        fetches += [F(f"key/{directory.relative_to(ROOT)}/{name}", directory / name, size)
                    for name, size in files.items()]
        more, generation = renumbered([directory / name for name in files], generation)
        links += more
    return T("ks", table, tuple(links)), fetches


def test_descriptors_of_both_naming_forms():
    assert descriptor("nb-12-big-Data.db") == "nb-12-big"
    assert descriptor(f"da-{UUID_ID}-bti-Partitions.db") == f"da-{UUID_ID}-bti"
    assert descriptor("nb-1-big-SAI+aa+RowToToken.db") == "nb-1-big"
    with pytest.raises(ValueError):
        descriptor("manifest.json")


def test_equal_generations_of_different_hosts_get_fresh_ones_and_components_stay_together():
    load, _ = table_load("t", {folder("10.0.0.1"): {"nb-1-big-Data.db": 5, "nb-1-big-TOC.txt": 1},
                               folder("10.0.0.2"): {"nb-1-big-Data.db": 5, f"da-{UUID_ID}-bti-Data.db": 7,
                                                    f"da-{UUID_ID}-bti-Rows.db": 2, "schema.cql": 1}})
    names = {str(source.relative_to(ROOT / SNAPSHOT)): name for source, name in load.links}
    assert names == {"10.0.0.1/full/ks/t/nb-1-big-Data.db": "nb-1-big-Data.db",
                     "10.0.0.1/full/ks/t/nb-1-big-TOC.txt": "nb-1-big-TOC.txt",
                     f"10.0.0.2/full/ks/t/da-{UUID_ID}-bti-Data.db": "da-2-bti-Data.db",
                     f"10.0.0.2/full/ks/t/da-{UUID_ID}-bti-Rows.db": "da-2-bti-Rows.db",
                     "10.0.0.2/full/ks/t/nb-1-big-Data.db": "nb-3-big-Data.db"}


def test_sstables_go_whole_to_the_node_with_fewest_bytes_one_folder_per_table_and_node():
    t, t_files = table_load("t", {
        folder("10.0.0.1"): {"nb-1-big-Data.db": 90, "nb-1-big-TOC.txt": 10, "nb-2-big-Data.db": 40},
        folder("10.0.0.2"): {"nb-1-big-Data.db": 60, "nb-1-big-TOC.txt": 10},
        folder("10.0.0.3", "incr-20250101123000"): {"nb-1-big-Data.db": 30}})
    u, u_files = table_load("u", {folder("10.0.0.1", table="u"): {"nb-7-big-Data.db": 50}})
    shares = loader_shares([t, u], t_files + u_files, ["10.0.0.4", "10.0.0.5"], ROOT, SNAPSHOT)
    # Largest first to the lighter node: t's 100 → .4, t's 70 → .5, u's 50 → .5, t's 40 → .4, t's 30 → .5.
    assert {h: s.bytes for h, s in shares.items()} == {"10.0.0.4": 140, "10.0.0.5": 150}
    four, five = shares["10.0.0.4"], shares["10.0.0.5"]
    assert [(x.keyspace, x.table) for x in four.tables] == [("ks", "t")]
    assert [(x.keyspace, x.table) for x in five.tables] == [("ks", "t"), ("ks", "u")]
    assert four.tables[0].directory == f".load/{SNAPSHOT}/ks/t"
    assert dict(four.tables[0].links) == {
        f"{SNAPSHOT}/10.0.0.1/full/ks/t/nb-1-big-Data.db": "nb-1-big-Data.db",
        f"{SNAPSHOT}/10.0.0.1/full/ks/t/nb-1-big-TOC.txt": "nb-1-big-TOC.txt",
        f"{SNAPSHOT}/10.0.0.1/full/ks/t/nb-2-big-Data.db": "nb-2-big-Data.db"}
    assert dict(five.tables[0].links) == {
        f"{SNAPSHOT}/10.0.0.2/full/ks/t/nb-1-big-Data.db": "nb-3-big-Data.db",
        f"{SNAPSHOT}/10.0.0.2/full/ks/t/nb-1-big-TOC.txt": "nb-3-big-TOC.txt",
        f"{SNAPSHOT}/10.0.0.3/incr-20250101123000/ks/t/nb-1-big-Data.db": "nb-4-big-Data.db"}
    assert five.tables[0].label == "ks.t on 10.0.0.5 (2 SSTables)"
    # What each node fetches is what it links, each file once, from its own key.
    for share in shares.values():
        assert sorted(f.path for f in share.files) == sorted(p for x in share.tables for p, _ in x.links)
    fetched = [f for s in shares.values() for f in s.files]
    assert sorted(f.key for f in fetched) == sorted(f.key for f in t_files + u_files)
    assert {f.path: f.size for f in fetched}[f"{SNAPSHOT}/10.0.0.1/full/ks/u/nb-7-big-Data.db"] == 50


def test_a_node_given_nothing_has_no_share_and_one_node_takes_all():
    t, files = table_load("t", {folder("10.0.0.1"): {"nb-1-big-Data.db": 9},
                                folder("10.0.0.2"): {"nb-1-big-Data.db": 9}})
    shares = loader_shares([t], files, ["10.0.0.4", "10.0.0.5", "10.0.0.6"], ROOT, SNAPSHOT)
    assert list(shares) == ["10.0.0.4", "10.0.0.5"]
    [solo] = loader_shares([t], files, ["10.0.0.4"], ROOT, SNAPSHOT).values()
    assert [name for _, name in solo.tables[0].links] == ["nb-1-big-Data.db", "nb-2-big-Data.db"]
    assert solo.units == ()  # nothing for nodetool import


# Records its arguments and the folder it was given, then exits as $LOADER_EXIT says.
FAKE_LOADER = """#!/bin/sh
for last; do :; done
printf '%s\\n' "$@" > "$(dirname "$0")/argv"
ls "$last" > "$(dirname "$0")/listing"
exit "${LOADER_EXIT:-0}"
"""


def test_a_node_links_its_share_under_the_load_names_streams_it_once_and_removes_the_links(tmp_path, monkeypatch):
    tools, staging = tmp_path / "bin", tmp_path / "staging"
    tools.mkdir()
    (tools / "sstableloader").write_text(FAKE_LOADER)
    (tools / "sstableloader").chmod(0o755)
    staged = staging / SNAPSHOT / "10.0.0.1" / "full" / "ks" / "t"
    staged.mkdir(parents=True)
    for name in ("nb-1-big-Data.db", "nb-1-big-TOC.txt"):
        (staged / name).write_text(name)
    block = CassandraCluster(hosts=[{"address": "10.0.0.4", "nodetool": f"{tools}/nodetool"}],
                             cql_username="dmf", cql_password="s3cret pass")
    load = NodeTableLoad("ks", "t", f".load/{SNAPSHOT}/ks/t",
                         ((f"{SNAPSHOT}/10.0.0.1/full/ks/t/nb-1-big-Data.db", "nb-4-big-Data.db"),
                          (f"{SNAPSHOT}/10.0.0.1/full/ks/t/nb-1-big-TOC.txt", "nb-4-big-TOC.txt")), "ks.t on 10.0.0.4")
    remote = LocalHost(block, block.hosts[0])
    stream_staged(remote, str(staging), load, ("10.0.0.4", "10.0.0.5"))
    folder = staging / ".load" / SNAPSHOT / "ks" / "t"
    assert (tools / "argv").read_text().splitlines() == [
        "-d", "10.0.0.4,10.0.0.5", "-p", "9042", "--no-progress", "-u", "dmf", "-pw", "s3cret pass", str(folder)]
    assert (tools / "listing").read_text().split() == ["nb-4-big-Data.db", "nb-4-big-TOC.txt"]
    assert not folder.exists() and sorted(p.name for p in staged.iterdir()) == ["nb-1-big-Data.db", "nb-1-big-TOC.txt"]

    monkeypatch.setenv("LOADER_EXIT", "3")
    with pytest.raises(RemoteError) as failed:
        stream_staged(remote, str(staging), load, ("10.0.0.4",))
    assert "-pw '***'" in str(failed.value) and "s3cret" not in str(failed.value)
    # A rerun makes the folder anew from the staged files, still there.
    assert sorted(p.name for p in folder.iterdir()) == ["nb-4-big-Data.db", "nb-4-big-TOC.txt"]


def test_the_nodes_sstableloader_is_the_one_beside_its_nodetool():
    assert tool_beside("/opt/cassandra/bin/nodetool", "sstableloader") == "/opt/cassandra/bin/sstableloader"
    assert tool_beside("sudo -u cassandra /usr/bin/nodetool", "sstableloader") == (
        "sudo -u cassandra /usr/bin/sstableloader")
    assert tool_beside("nodetool", "sstableloader") == "sstableloader"
    assert tool_beside("/usr/local/bin/nt-wrapper", "sstableloader") == "sstableloader"
    host = CassandraCluster(hosts=[{"address": "10.0.0.4", "nodetool": "/b/nodetool",
                                    "sstableloader": "/c/sstableloader -f /etc/cassandra/cassandra.yaml"}]).hosts[0]
    assert host.sstableloader_command == "/c/sstableloader -f /etc/cassandra/cassandra.yaml"


def test_the_worker_streams_only_the_fallback_nodes_sstables():
    t, files = table_load("t", {folder("10.0.0.1"): {"nb-1-big-Data.db": 9, "nb-1-big-TOC.txt": 1},
                                folder("10.0.0.2"): {"nb-1-big-Data.db": 9}})
    load = TableLoad("ks", "t", ROOT / SNAPSHOT / ".load" / "ks" / "t", t.links, 2)
    [cut] = worker_tables([load], [f for f in files if "10.0.0.2" in str(f.dest)])
    assert [name for _, name in cut.links] == ["nb-2-big-Data.db"] and cut.directory == load.directory
    assert worker_tables([load], []) == []
