"""Point-in-time recovery in a scratch Cassandra (issue 25), through the CLI: the shipped segments of
all three nodes replayed up to a second on the worker, then loaded after the snapshot: in place after
a DROP, --into a copy while the live table takes writes, and into the one-node second cluster. No
node of the source cluster restarts.

The three restores share one PATH, in this order, as an operator restoring the same point three ways
would: the first replays (and keeps it with --keep-files), the next two reuse that replay, since it
was made for the same segments, time, version and schema (the target is not among them), and each
still gets exactly the rows of the restore point. The last one, without --keep-files, removes it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

from dmf.core.scratch import REPLAY_RECORD
from dmf.cql import connect
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.ship_commitlogs import ship_commitlogs

from .helpers import HOSTS, close_active_segments, insert_rows, save_as, tick

pytestmark = pytest.mark.integration


def state(cluster_block, table: str) -> dict[int, tuple]:
    with connect(cluster_block) as session:
        return {r.id: (r.payload, frozenset(r.tags or ()), r.ttl is not None)
                for r in session.execute(f"SELECT id, payload, tags, TTL(payload) AS ttl FROM {table}")}


def node_pids(testbed) -> list[str]:
    """A restarted node has a new process: the pids before and after tell."""
    return [node.dir("cassandra.pid").read_text().strip() for node in testbed.nodes(3)]


def cli_restore(testbed, path, target: str, at: str, *extra: str, hosts: str = HOSTS
                ) -> subprocess.CompletedProcess:
    """The CLI with -v: its summary on stdout, the run's log lines on stderr."""
    env = {**os.environ, "DMF_CACHE_DIR": str(testbed.cache)}
    result = subprocess.run([sys.executable, "-m", "dmf.cli", "-v", "restore", "snapshot", hosts, str(path), target,
                             "--time", at, "--replay-commitlogs", *extra], capture_output=True, text=True,
                            timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def replayed_lines(out: str) -> list[str]:
    """The summary's line per source node: its mutations and segments."""
    return [line for line in out.splitlines() if "mutation(s) replayed up to" in line]


def assert_reused(result: subprocess.CompletedProcess, path, first: list[str]) -> None:
    """No scratch start: the log says the replay in PATH was reused and why, the summary says so and
    reports the counts the first replay recorded."""
    segments = sum(int(re.search(r"from (\d+) segment\(s\)", line)[1]) for line in first)
    assert f"replay of {segments} segment(s) reused from {path.resolve() / 'scratch-cassandra'}/replayed: " \
           "made for the same segments and time" in result.stderr
    assert "mutation(s) replayed in" not in result.stderr  # the progress line of each source node's start
    assert "commit-log replay reused from" in result.stdout
    assert replayed_lines(result.stdout) == first


@pytest.fixture(scope="module")
def replay_path(tmp_path_factory):
    """The one PATH of the module's three restores (see the module's docstring)."""
    return tmp_path_factory.mktemp("pitr-scratch")


@pytest.fixture(scope="module")
def first_replay() -> list[str]:
    """The first restore's per-node summary lines, which the restores reusing its replay report too."""
    return []


@pytest.fixture(scope="module")
def history(testbed, cluster_block):
    """Rows, a collection, a TTL; a full; more writes; the restore point; deletes, updates and
    inserts after it; the segments shipped. `expected` is the table as of the restore point."""
    keyspace = f"pitr_{os.urandom(4).hex()}"
    table = f"{keyspace}.events"
    with connect(cluster_block) as session:
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 3}")
        session.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, payload text, tags set<text>)")
    insert_rows(cluster_block, keyspace, "events", range(0, 40))
    backup_snapshot(hosts=HOSTS, db_target=table, backup_schema=True)
    insert_rows(cluster_block, keyspace, "events", range(40, 60))
    with connect(cluster_block) as session:
        session.execute(f"UPDATE {table} SET payload = 'changed-before', tags = tags + {{'a'}} WHERE id = 5")
        session.execute(f"UPDATE {table} SET tags = {{'x', 'y'}} WHERE id = 45")
        session.execute(f"INSERT INTO {table} (id, payload) VALUES (1000, 'ttl') USING TTL 86400")
        session.execute(f"DELETE FROM {table} WHERE id = 1")
    at = tick()
    with connect(cluster_block) as session:
        for i in range(10, 20):
            session.execute(f"DELETE FROM {table} WHERE id = {i}")
        session.execute(f"UPDATE {table} SET payload = 'changed-after', tags = tags + {{'late'}} WHERE id = 45")
        session.execute(f"UPDATE {table} SET tags = tags - {{'a'}} WHERE id = 5")
    insert_rows(cluster_block, keyspace, "events", range(60, 80))
    close_active_segments(cluster_block, keyspace)  # so every write above is archived, then shipped
    ship_commitlogs(hosts=HOSTS)
    payload = "p" * 100
    expected = {i: (payload, frozenset(), False) for i in range(0, 60) if i != 1}
    expected[5] = ("changed-before", frozenset({"a"}), False)
    expected[45] = (payload, frozenset({"x", "y"}), False)
    expected[1000] = ("ttl", frozenset(), True)
    return dict(keyspace=keyspace, table=table, at=at, expected=expected)


def test_into_a_copy_while_the_live_table_takes_writes(testbed, cluster_block, history, replay_path, first_replay):
    live_before = state(cluster_block, history["table"])
    pids = node_pids(testbed)
    writing, written = threading.Event(), []

    def write_meanwhile():
        with connect(cluster_block) as session:
            i = 5000
            while not writing.is_set():
                session.execute(f"INSERT INTO {history['table']} (id, payload) VALUES ({i}, 'live')")
                written.append(i)
                i += 1
                writing.wait(0.2)
    writer = threading.Thread(target=write_meanwhile)
    writer.start()
    try:
        result = cli_restore(testbed, replay_path, history["table"], history["at"], "--into",
                             f"{history['keyspace']}.copy", "--keep-files")
    finally:
        writing.set()
        writer.join()
    assert state(cluster_block, f"{history['keyspace']}.copy") == history["expected"]
    live_after = state(cluster_block, history["table"])
    assert written and live_after == {**live_before, **{i: ("live", frozenset(), False) for i in written}}
    assert node_pids(testbed) == pids
    # Every node's segments replayed, each in a start of its own, the count shown per source node.
    lines = replayed_lines(result.stdout)
    assert len(lines) == 3 and all("in a scratch Cassandra" in line for line in lines)
    assert result.stderr.count("mutation(s) replayed in") == 3 and "reused" not in result.stdout
    # Kept with the files (--keep-files): the replayed SSTables alone, recorded complete last.
    home = replay_path / "scratch-cassandra"
    assert sorted(p.name for p in home.iterdir()) == ["load", REPLAY_RECORD, "replayed"]
    first_replay.extend(lines)


def test_in_place_after_a_drop(testbed, cluster_block, history, replay_path, first_replay):
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {history['table']}")
    pids = node_pids(testbed)
    result = cli_restore(testbed, replay_path, history["table"], history["at"], "--schema", "--keep-files")
    assert state(cluster_block, history["table"]) == history["expected"]
    assert node_pids(testbed) == pids
    assert_reused(result, replay_path, first_replay)


def test_into_the_one_node_second_cluster(testbed, cluster_block, solo_cluster, history, replay_path,
                                         first_replay):
    """Another cluster: its one node has none of the source's host IDs, which a scratch replay needs not.
    Without --keep-files, the replay it reused goes once loaded."""
    save_as(solo_cluster, "pitr-solo")
    pids = node_pids(testbed)
    result = cli_restore(testbed, replay_path, history["table"], history["at"], "--schema", "--replication",
                         "{'class': 'SimpleStrategy', 'replication_factor': 1}", "--cluster-block", "pitr-solo",
                         hosts="127.0.0.4")
    assert state(solo_cluster, history["table"]) == history["expected"]
    assert node_pids(testbed) == pids
    assert_reused(result, replay_path, first_replay)
    assert not (replay_path / "scratch-cassandra").exists()
