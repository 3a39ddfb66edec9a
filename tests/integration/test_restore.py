"""backup list and restore against the three-node test bed: the operator's DROP TABLE story."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dmf.core.errors import InputError
from dmf.core.keys import parse_set_prefix
from dmf.core.timestamps import format_ts
from dmf.cql import connect
from dmf.flows.backup_list import backup_list
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot

from .helpers import HOSTS, drop, new_table

pytestmark = pytest.mark.integration


def rows(cluster_block, keyspace: str, table: str) -> set[int]:
    with connect(cluster_block) as session:
        return {r.id for r in session.execute(f"SELECT id FROM {keyspace}.{table}")}


@pytest.fixture(scope="module")
def history(shared_chain):
    """The session's shared chain (tests/integration/conftest.py): t1 rows + full; t2 rows +
    incremental; t3a rows, t3b rows, commit logs shipped."""
    return shared_chain


def test_backup_list_shows_the_history(history):
    listed = backup_list(start_time=history["full"]["snapshot_ts"])
    ours = [r for r in listed if r["db_target"] == history["target"]]
    assert [(r["kind"], r["complete"]) for r in ours] == [("full", True), ("incremental", True)]
    assert ours[0]["files"] > 0 and ours[0]["bytes"] > ours[1]["bytes"] > 0
    assert sorted(ours[0]["hosts"]) == sorted(HOSTS.split(","))
    # This history's own commit-log sets (one row per host ID and batch), found by the prefixes it
    # shipped to: each listed once, complete, after t3a; what another test shipped cannot pass for them.
    shipped = [(s["host_id"], parse_set_prefix(s["prefix"])) for s in history["shipped"] if s["segments"]]
    assert shipped
    for host_id, ref in shipped:
        [batch] = [r for r in listed if r["kind"] == "commitlog" and r["hosts"] == [host_id]
                   and (r["time"], r["snapshot_ts"]) == (format_ts(ref.time), format_ts(ref.snapshot_ts))]
        assert batch["complete"] and batch["time"] >= history["between_t3a_t3b"]
    # The window excludes what came before it.
    later = backup_list(start_time=history["incr"]["set_ts"])
    assert not [r for r in later if r["db_target"] == history["target"] and r["kind"] == "full"]


def test_restore_to_time_between_t2_and_t3a(history, cluster_block, tmp_path):
    """The worker path (--mode sstableloader): every file downloaded into PATH, kept, and resumed there."""
    drop(cluster_block, history["target"])
    summary = restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=history["target"], restore_schema=True,
                               time=int(history["between_t2_t3a"]), get_commitlogs=True, keep_files=True,
                               mode="sstableloader")
    assert rows(cluster_block, history["keyspace"], history["table"]) == set(range(150))
    assert summary["snapshot_ts"] == history["full"]["snapshot_ts"]
    assert summary["increments"] == [history["incr"]["set_ts"]]
    # Commit logs up to --time (and the first batch after it) are fetched per host ID.
    commitlogs = tmp_path / "cassandra_commitlogs"
    host_dirs = sorted(p.name for p in commitlogs.iterdir())
    assert host_dirs == sorted(r["host_id"] for r in history["shipped"])
    assert all(any(d.glob("CommitLog-*.log")) for d in commitlogs.iterdir())
    assert not list(commitlogs.glob("*/*.gz")) and not list(commitlogs.glob("*/*.part"))  # as Cassandra wrote them

    # A rerun resumes: every file already there is verified, and only the one corrupted since (of the
    # same size) is downloaded again. (One rerun for both: each restore starts sstableloader JVMs.)
    assert summary["downloaded_files"] > 0
    data = next(tmp_path.rglob("*-Data.db"))
    data.write_bytes(b"corrupt" + data.read_bytes()[7:])
    again = restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=history["target"],
                             time=history["between_t2_t3a"], keep_files=True, mode="sstableloader")
    assert again["downloaded_files"] == 1 and again["files"] == summary["files"]
    assert not data.read_bytes().startswith(b"corrupt")


def test_restore_errors_are_clear(history, tmp_path):
    # Segments of the three host IDs are needed; one host cannot replay the others' (nothing downloaded).
    with pytest.raises(InputError, match="no host of HOSTS \\(127.0.0.1\\) has that host ID"):
        restore_snapshot(hosts="127.0.0.1", path=str(tmp_path), db_target=history["target"],
                         time=history["between_t3a_t3b"], replay_commitlogs=True, replay_on="nodes")
    assert not any(tmp_path.iterdir())
    with pytest.raises(InputError, match="no complete backup covers nosuchks"):
        restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target="nosuchks.t")
    with pytest.raises(InputError, match="before the first complete snapshot"):
        restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=history["target"], time="20000101000000")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="PATH"):
        restore_snapshot(hosts=HOSTS, path=str(blocker / "sub"), db_target=history["target"])


def test_cli_restore_rejects_bad_time(history):
    result = subprocess.run([sys.executable, "-m", "dmf.cli", "restore", "snapshot", HOSTS, "/tmp/x",
                             history["target"], "--time", "2025-01-01"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "invalid --time" in result.stderr and "Traceback" not in result.stderr


def test_cli_flow_failure_prints_no_traceback(history):
    result = subprocess.run([sys.executable, "-m", "dmf.cli", "restore", "snapshot", HOSTS, "/tmp/x", "nosuchks.t"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == "dmf: error: no complete backup covers nosuchks.t (see `dmf backup list`)"


def test_restore_with_nodetool_import(testbed, cluster_block, tmp_path):
    """--mode import: each host gets its own SSTables back and loads them with nodetool import."""
    keyspace, table = new_table(cluster_block, rows=80, prefix="i")
    target = f"{keyspace}.{table}"
    backup_snapshot(hosts=HOSTS, db_target=target)
    with connect(cluster_block) as session:
        session.execute(f"TRUNCATE {target}")
    assert rows(cluster_block, keyspace, table) == set()
    summary = restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=target, mode="import")
    assert summary["mode"] == "import" and len(summary["loaded"]) == 3
    assert rows(cluster_block, keyspace, table) == set(range(80))
    with pytest.raises(InputError, match="HOSTS must include"):
        restore_snapshot(hosts="127.0.0.1", path=str(tmp_path), db_target=target, mode="import")


def replay_starts(cluster_block, offsets: dict[str, int], table: str) -> dict[str, int]:
    """How many starts of each node since `offsets` ran with a replay filter naming `table`."""
    from dmf.ssh import RemoteHost
    counts = {}
    for host in cluster_block.hosts:
        with RemoteHost(cluster_block, host) as remote:
            log = remote.run(["tail", "-c", f"+{offsets[host.address] + 1}", "--", host.system_log]).stdout
        counts[host.address] = sum(1 for line in log.splitlines()
                                   if "Tables to be replayed:" in line and table in line)
    return counts


def test_replay_recovers_to_the_second_and_resumes_after_a_failed_start_and_a_killed_manager(
        history, cluster_block, tmp_path):
    """Restore with replay to a time between t3a and t3b: exactly t1, t2 and t3a, nothing of t3b.
    The nodes start as under systemd, with an empty environment: the replay list must reach
    Cassandra through its JVM options file (Cassandra's log shows the filter, or the step fails).
    Node 2's start fails once: the rollout stops with one line (who is replayed, who is not, the
    command to continue). That command, killed while node 2 restarts, then run again, finishes:
    every node replayed exactly once, no restore keys or replay option left anywhere."""
    import os
    import signal
    import socket
    from dmf.flows.restore_snapshot import RestoreFailed
    from dmf.ssh import RemoteHost
    flag = tmp_path / "fail-next-start"
    hosts = []
    for h in cluster_block.hosts:
        start = f"env -i PATH=/usr/local/bin:/usr/bin:/bin {h.start_command}"
        if h.address == "127.0.0.2":
            start = (f"sh -c 'if [ -e \"$0\" ]; then rm -f \"$0\"; echo start refused >&2; exit 1; fi; exec \"$@\"' "
                     f"{flag} {start}")
        hosts.append(h.model_copy(update={"start_command": start}))
    cluster_block.model_copy(update={"hosts": hosts}).save("flaky-start", overwrite=True)
    offsets = {}
    for host in cluster_block.hosts:
        with RemoteHost(cluster_block, host) as remote:
            offsets[host.address] = remote.stat(host.system_log).st_size
    drop(cluster_block, history["target"])
    path = tmp_path / "restore"
    flag.write_text("")
    with pytest.raises(RestoreFailed) as stopped:
        restore_snapshot(hosts=HOSTS, path=str(path), db_target=history["target"], restore_schema=True,
                         time=history["between_t3a_t3b"], replay_commitlogs=True, replay_on="nodes",
                         cluster_block="flaky-start")
    message = str(stopped.value)
    assert "replay stopped at 127.0.0.2" in message and "start refused" in message
    assert "Replayed: 127.0.0.1; not replayed: 127.0.0.2, 127.0.0.3" in message
    command = message.split("continue with: ", 1)[1].split()
    assert command[:3] == ["dmf", "restore", "snapshot"] and "--cluster-block" in command

    # The printed command, killed while node 2 is down for its replay restart.
    run = subprocess.Popen([sys.executable, "-m", "dmf.cli", *command[1:]], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    state_file = path / "replay-state.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and run.poll() is None:
        if '"restarting"' in (state_file.read_text() if state_file.exists() else ""):
            try:
                socket.create_connection(("127.0.0.2", 9042), timeout=1).close()
            except OSError:
                break  # drained or stopped: the restart is under way
        time.sleep(0.5)
    assert run.poll() is None, "the rerun ended before node 2's restart began"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()

    summary = restore_snapshot(hosts=HOSTS, path=str(path), db_target=history["target"], restore_schema=True,
                               time=history["between_t3a_t3b"], replay_commitlogs=True, replay_on="nodes",
                               cluster_block="flaky-start")
    assert rows(cluster_block, history["keyspace"], history["table"]) == set(range(170))
    assert set(summary["replayed_mutations"]) == set(HOSTS.split(","))
    assert all(n >= 20 for n in summary["replayed_mutations"].values()), summary["replayed_mutations"]
    assert replay_starts(cluster_block, offsets, history["table"]) == {a: 1 for a in HOSTS.split(",")}
    assert not state_file.exists()
    for host in cluster_block.hosts:
        with RemoteHost(cluster_block, host) as remote:
            properties = b"".join(remote.iter_file(f"{host.config_dir}/commitlog_archiving.properties")).decode()
            jvm_options = (b"".join(remote.iter_file(host.jvm_options_path)).decode()
                           if remote.is_file(host.jvm_options_path) else "")
            # Replaced whole and put back from the saved originals, which go once the node is back.
            leftovers = [p + suffix for p in (f"{host.config_dir}/commitlog_archiving.properties",
                                              host.jvm_options_path) for suffix in (".dmf-orig", ".dmf-tmp")
                         if remote.is_file(p + suffix)]
        assert "restore_point_in_time" not in properties and "replayList" not in jvm_options
        assert "archive_command=" in properties and leftovers == []
