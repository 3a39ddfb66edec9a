"""restore --mode node on the bed: each node fetches its own share from S3 and imports it. A restore
to a time (exact rows), one killed midway and run again (no verified file fetched twice), a node
without python falling back to the worker path, and a restore into another topology (HOSTS without a
backup host) streamed by sstableloader on the nodes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dmf.core.targets import DbTarget
from dmf.cql import connect
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.loader import import_folder
from dmf.node import Node
from dmf.ssh import RemoteHost
from dmf.testbed import prefect_server

from .helpers import HOSTS, drop, ids, new_table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backed_up(shared_chain):
    """The session's shared chain (tests/integration/conftest.py): rows 0-99 in its full, rows 100-149
    in its increment. Its table is live: each test drops it and restores the schema (never TRUNCATE it)."""
    return dict(target=shared_chain["target"], full_ts=shared_chain["full"]["set_ts"])


def staged_files(cluster_block, target: str) -> dict[str, Path]:
    """Every verified file of `target` staged on the nodes (they share this machine), by path: other
    tests' restores may have kept theirs (--keep-files)."""
    keyspace, table = target.split(".")
    return {str(p): p for host in cluster_block.hosts for p in Path(host.restore_staging_dir).rglob("*")
            if p.is_file() and ".import" not in p.parts and not p.name.endswith(".part")
            and (keyspace, table) in zip(p.parts, p.parts[1:])}


def test_node_path_restores_to_a_time(backed_up, cluster_block, tmp_path):
    drop(cluster_block, backed_up["target"])
    summary = restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=backed_up["target"], restore_schema=True,
                               time=backed_up["full_ts"], mode="node")
    assert ids(cluster_block, backed_up["target"]) == set(range(100))  # the full's rows, not its increment's
    assert summary["fallbacks"] == {} and set(summary["nodes"]) == set(HOSTS.split(","))
    assert all(n["fetched_bytes"] > 0 and n["skipped_files"] == 0 for n in summary["nodes"].values())
    assert not staged_files(cluster_block, backed_up["target"]), "the staged files are removed after a successful restore"


# The restore, held once each node has been handed two files: the kill then lands with some files
# staged and verified on every node and the rest not fetched.
HELD_RESTORE = """
import sys, time
from dmf.node_fetch import NodeFetch
job = NodeFetch._job
def held(self, item, _count={}):
    _count[id(self)] = _count.get(id(self), 0) + 1
    if _count[id(self)] > 2:
        time.sleep(3600)
    return job(self, item)
NodeFetch._job = held
from dmf.flows.restore_snapshot import restore_snapshot
restore_snapshot(**__import__("json").loads(sys.argv[1]))
"""


def test_a_killed_node_restore_resumes_without_fetching_verified_files_again(backed_up, testbed, cluster_block,
                                                                            tmp_path):
    arguments = dict(hosts=HOSTS, path=str(tmp_path), db_target=backed_up["target"], mode="node", restore_schema=True)
    drop(cluster_block, backed_up["target"])
    run = subprocess.Popen([sys.executable, "-c", HELD_RESTORE, json.dumps(arguments)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True,
                           env={**os.environ, "PREFECT_API_URL": prefect_server.api_url(testbed)})
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and run.poll() is None:
            staged = staged_files(cluster_block, backed_up["target"])
            if all(any(h.restore_staging_dir in p for p in staged) for h in cluster_block.hosts):
                time.sleep(1)  # each node's second file lands too
                break
            time.sleep(0.2)
        else:
            pytest.fail("the restore ended, or staged nothing on some node, before the kill")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    before = {path: (p.stat().st_ino, p.stat().st_size)
              for path, p in staged_files(cluster_block, backed_up["target"]).items()}
    try:
        drop(cluster_block, backed_up["target"])
        summary = restore_snapshot(**arguments, keep_files=True)
        after = staged_files(cluster_block, backed_up["target"])
        assert ids(cluster_block, backed_up["target"]) == set(range(150))
        assert {path: (after[path].stat().st_ino, after[path].stat().st_size) for path in before} == before
        assert summary["skipped_bytes"] == sum(size for _, size in before.values()) > 0
        assert sum(n["skipped_files"] for n in summary["nodes"].values()) == len(before)
        assert sum(n["fetched_files"] + n["skipped_files"] for n in summary["nodes"].values()) == len(after)
    finally:
        for host in cluster_block.hosts:
            shutil.rmtree(host.restore_staging_dir, ignore_errors=True)
            os.makedirs(host.restore_staging_dir, exist_ok=True)


def test_a_node_without_python_falls_back_to_the_worker_path(backed_up, cluster_block, tmp_path):
    hosts = [h.model_copy(update={"python": "/nonexistent/python3"}) if h.address == "127.0.0.2" else h
             for h in cluster_block.hosts]
    cluster_block.model_copy(update={"hosts": hosts}).save("one-node-without-python", overwrite=True)
    drop(cluster_block, backed_up["target"])
    summary = restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=backed_up["target"], mode="node",
                               restore_schema=True, cluster_block="one-node-without-python")
    assert ids(cluster_block, backed_up["target"]) == set(range(150))
    assert list(summary["fallbacks"]) == ["127.0.0.2"] and "/nonexistent/python3" in summary["fallbacks"]["127.0.0.2"]
    assert set(summary["nodes"]) == {"127.0.0.1", "127.0.0.3"}
    assert summary["downloaded_files"] > 0  # 127.0.0.2's share, through the worker


def test_into_another_topology_the_nodes_stream_their_shares_with_sstableloader(backed_up, cluster_block, tmp_path):
    """HOSTS leave out 127.0.0.3, whose files cannot be imported anywhere: each of the two nodes fetches a
    share of every host's SSTables and streams it with its own sstableloader, one per table."""
    drop(cluster_block, backed_up["target"])
    try:
        summary = restore_snapshot(hosts="127.0.0.1,127.0.0.2", path=str(tmp_path), db_target=backed_up["target"],
                                   mode="node", restore_schema=True, keep_files=True)
        assert ids(cluster_block, backed_up["target"]) == set(range(150))
        assert summary["load_mode"] == "node-sstableloader"
        assert summary["fallbacks"] == {} and set(summary["nodes"]) == {"127.0.0.1", "127.0.0.2"}
        assert all(n["fetched_bytes"] > 0 for n in summary["nodes"].values())
        table = backed_up["target"]
        assert sorted(line.split(" (")[0] for line in summary["loaded"]) == [
            f"{table} on 127.0.0.1", f"{table} on 127.0.0.2"]  # one loader per table per node
        # No SSTable passed through the worker (PATH, kept, holds only the schema it reads), and the
        # nodes' load folders (links) are gone while the staged files are kept.
        assert {p.name for p in tmp_path.rglob("*") if p.is_file()} == {"schema.cql"}
        staged = staged_files(cluster_block, backed_up["target"])
        assert staged and not any("/.load/" in path for path in staged)
        assert sum(n["fetched_files"] for n in summary["nodes"].values()) == len(staged)
    finally:
        for host in cluster_block.hosts:
            shutil.rmtree(host.restore_staging_dir, ignore_errors=True)
            os.makedirs(host.restore_staging_dir, exist_ok=True)


# What sstableloader's streaming writes on a node for each SSTable (no bloom filter, TOC or digest):
# a backup taken after such a restore holds them so.
STREAMED_COMPONENTS = ("Data.db", "Index.db", "Statistics.db", "Summary.db", "CompressionInfo.db")


def test_sstables_without_their_bloom_filter_import_although_the_import_writes_one_beside_them(
        cluster_block, monkeypatch):
    keyspace, table = new_table(cluster_block, rows=40, prefix="f")
    with connect(cluster_block) as session:
        session.execute(f"CREATE TABLE {keyspace}.copy (id int PRIMARY KEY, payload text)")
    left_behind: list[str] = []
    list_files = RemoteHost.list_files

    def recording(self, folder):  # what the import left in the folder
        found = list_files(self, folder)
        left_behind.extend(f.path for f in found)
        return found
    monkeypatch.setattr(RemoteHost, "list_files", recording)

    def import_streamed_copy(host) -> None:
        """The node's own SSTables of the table (RF 3: all 40 rows), linked as streaming leaves them."""
        with RemoteHost(cluster_block, host) as remote:
            Node(remote).flush(DbTarget(keyspace, table), [keyspace])
            folder = Path(host.restore_staging_dir, f"streamed_{keyspace}")
            folder.mkdir()
            for source in Path(host.data_dirs[0], keyspace).glob(f"{table}-*/*-big-*"):
                if source.name.split("-big-")[1] in STREAMED_COMPONENTS:
                    os.link(source, folder / source.name)
            import_folder(remote, keyspace, "copy", str(folder), f"{host.address} streamed copy",
                          [p.name for p in folder.iterdir()])
            assert not folder.exists()

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(import_streamed_copy, cluster_block.hosts))
    assert ids(cluster_block, f"{keyspace}.copy") == set(range(40))
    # What the import wrote beside the SSTables it took, and left: once the whole restore's failure.
    assert left_behind and all(name.endswith("-big-Filter.db") for name in left_behind)
