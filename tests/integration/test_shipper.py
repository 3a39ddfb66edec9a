"""The long-lived commit-log shipper on the bed: killed mid-batch and started again, it loses and
duplicates nothing in sealed batches."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmf.core.catalog import SEGMENTS_CLOSED_AT
from dmf.core.keys import SetKind, heartbeat_key
from dmf.core.keys import leases_prefix
from dmf.core.segments import SEGMENT_NAME, shipped_segments
from dmf.core.shipper import Heartbeat, shipper_lease_name
from dmf.core.timestamps import parse_ts, utcnow
from dmf.cql import connect, node_facts
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.ship_commitlogs import ship_commitlogs
from dmf.repository import Repository
from dmf.ssh import RemoteHost
from dmf.storage import Storage
from dmf.testbed import prefect_server

from .helpers import HOSTS, insert_rows, keys_under, new_table

pytestmark = pytest.mark.integration
SEGMENT_ID = re.compile(r"CommitLog-\d+-(\d+)\.log")


def start_shipper(testbed, log: Path, **params) -> subprocess.Popen:
    """The flow in a process of its own, so the test can kill it as a crash would; its log in `log`."""
    code = ("from dmf.flows.ship_commitlogs_continuous import ship_commitlogs_continuous as f; "
            f"r = f(**{params!r}); assert not r['standby'], r")
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url(testbed)}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def unsealed_batches(repository_block, snapshot: str, host_ids) -> dict[str, list[str]]:
    """Batch prefix → its segment objects, for batches with objects and no manifest yet."""
    found = {}
    for host_id in host_ids:
        by_batch: dict[str, list[str]] = {}
        for key in keys_under(repository_block, f"{snapshot}/{host_id}/commitlogs/"):
            prefix, name = key.rsplit("/", 1)
            by_batch.setdefault(prefix + "/", []).append(name)
        found.update({p: names for p, names in by_batch.items() if "manifest.json" not in names})
    return found


def test_shipper_killed_mid_batch_then_restarted_loses_and_duplicates_nothing(testbed, cluster_block,
                                                                                 repository_block, tmp_path):
    keyspace, table = new_table(cluster_block)
    snapshot = backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}")["snapshot_ts"]
    ship_commitlogs(hosts=HOSTS)  # what earlier tests left: from here on segment IDs follow each other
    with connect(cluster_block) as session:
        facts = node_facts(session)
        cluster_name = session.cluster.metadata.cluster_name
    host_ids = {facts[a].host_id for a in HOSTS.split(",")}
    time.sleep(1.1)  # batch times are to the second: the one-shot's batch is before `since`
    since = utcnow()
    storage = Storage(repository_block)

    first = start_shipper(testbed, tmp_path / "first.log", lifetime_s=600, seal_every_s=4, handover_tick_s=1)
    try:
        # Writes close a 1 MiB segment on each node every second or so; the 4 s cadence keeps a batch
        # open most of the time: the shipper is killed with one uploaded and not sealed.
        caught, deadline, n = {}, time.monotonic() + 90, 0
        while not caught and time.monotonic() < deadline:
            insert_rows(cluster_block, keyspace, table, range(n, n + 600), payload="c" * 1000)
            n += 600
            caught = unsealed_batches(repository_block, snapshot, host_ids)
        assert caught, "no batch caught between upload and seal: " + (tmp_path / "first.log").read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    # Its lease would lapse after its TTL (dmf.lease's own tests); removed here rather than waited out.
    storage.delete_keys([o["Key"] for o in storage.list_objects(leases_prefix(shipper_lease_name(cluster_name)))])

    second = start_shipper(testbed, tmp_path / "second.log", lifetime_s=12, seal_every_s=1, handover_tick_s=1)
    insert_rows(cluster_block, keyspace, table, range(n, n + 1200), payload="c" * 1000)
    assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()[-3000:]

    repo = Repository(storage)
    sealed = [m for g in repo.catalog(start=since, kinds={SetKind.COMMITLOG}).commitlogs if g.complete
              for m in g.manifests if m.set.node in host_ids]
    for host_id in host_ids:
        names = [s.segment for m in sealed if m.set.node == host_id for s in shipped_segments(m)]
        assert len(names) == len(set(names)), f"{host_id}: a segment sealed twice"
        numbers = sorted(int(SEGMENT_ID.fullmatch(name).group(1)) for name in names)
        assert numbers and numbers == list(range(numbers[0], numbers[-1] + 1)), f"{host_id}: a segment lost"
        beat = Heartbeat.from_json("", storage.get_bytes(heartbeat_key(cluster_name, host_id)))
        newest_close = max(parse_ts(t) for m in sealed if m.set.node == host_id
                           for t in m.extra[SEGMENTS_CLOSED_AT].values())
        assert beat.recovery_point == newest_close and beat.unsealed == 0
    killed_names = {n for names in caught.values() for n in names if n != "manifest.json"}
    assert {n.removesuffix(".gz") for n in killed_names} <= {s.segment for m in sealed for s in shipped_segments(m)}
    for address in HOSTS.split(","):  # every archived segment shipped, and gone from the node
        host = cluster_block.host(address)
        with RemoteHost(cluster_block, host) as remote:
            left = [f.path for f in remote.list_files(host.commitlog_archive_dir) if "/" not in f.path]
        assert not [p for p in left if SEGMENT_NAME.fullmatch(p.removesuffix(".gz"))], (address, left)


def ensure_cdc(testbed) -> None:
    """cdc_enabled and a 2 s commit-log sync on every node, as testbed/cassandra.py writes them: a bed
    configured before they were restarts its nodes here, once."""
    from dmf.testbed.__main__ import node_start, node_stop
    for node in testbed.nodes(3):
        conf = node.dir("conf") / "cassandra.yaml"
        text = conf.read_text()
        if "cdc_enabled: true" in text:
            continue
        conf.write_text(text.replace("commitlog_sync_period: 10000ms", "commitlog_sync_period: 2000ms")
                        + "cdc_enabled: true\n")
        node_stop(testbed, node.index)
        node_start(testbed, node.index)


def test_pitr_to_a_second_written_10s_before_the_shipper_dies_restores_it_from_a_cdc_prefix(
        testbed, cluster_block, repository_block, tmp_path):
    """No segment closes (few writes, 1 MiB segments): only the CDC prefix of the active segment holds
    the rows of the second before the restore time when the shipper is killed 10 s after it."""
    from dmf.flows.restore_snapshot import restore_snapshot
    from dmf.core.shipper import SEGMENT_PREFIXES

    ensure_cdc(testbed)
    hosts = [h.model_copy(update={"cdc_raw_dir": str(testbed.node(int(h.address.rsplit(".", 1)[1])).dir("cdc_raw"))})
             for h in cluster_block.hosts]
    cluster_block.model_copy(update={"hosts": hosts}).save("cdc-shipper", overwrite=True)
    keyspace, table = new_table(cluster_block, prefix="cdc")
    target = f"{keyspace}.{table}"
    with connect(cluster_block) as session:
        session.execute(f"ALTER TABLE {target} WITH cdc = true")
    insert_rows(cluster_block, keyspace, table, range(0, 50))
    backup_snapshot(hosts=HOSTS, db_target=target, backup_schema=True)
    started = utcnow()
    shipper = start_shipper(testbed, tmp_path / "cdc.log", cluster_block="cdc-shipper", lifetime_s=600,
                            seal_every_s=1, handover_tick_s=1)
    try:
        storage = Storage(repository_block)
        with connect(cluster_block) as session:
            host_ids = [f.host_id for a, f in node_facts(session).items() if a in HOSTS.split(",")]
            cluster_name = session.cluster.metadata.cluster_name
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # every node's shipper is up once it has beaten
            beats = [storage.get_bytes(heartbeat_key(cluster_name, h), missing_ok=True)
                     for h in host_ids]
            if all(b and Heartbeat.from_json("", b).beat_at >= started for b in beats):
                break
            assert shipper.poll() is None, (tmp_path / "cdc.log").read_text()[-3000:]
            time.sleep(0.25)  # three small GETs a look: the rows to recover go in soon after the last beat
        insert_rows(cluster_block, keyspace, table, range(50, 80))  # the second to recover
        written = time.monotonic()
        time.sleep(1.1)
        at = utcnow().strftime("%Y%m%d%H%M%S")
        time.sleep(1.1)
        insert_rows(cluster_block, keyspace, table, range(80, 100))  # after the restore time
        time.sleep(max(0.0, written + 10 - time.monotonic()))
        shipper.send_signal(signal.SIGKILL)
        shipper.wait(timeout=10)
    finally:
        if shipper.poll() is None:
            shipper.kill()
    prefixes = [m for g in Repository(storage).catalog(start=started, kinds={SetKind.COMMITLOG}).commitlogs
                if g.complete for m in g.manifests if SEGMENT_PREFIXES in m.extra]
    assert {m.host_id for m in prefixes} == set(host_ids), (tmp_path / "cdc.log").read_text()[-3000:]
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {target}")
    restore_snapshot(hosts=HOSTS, path=str(tmp_path / "restore"), db_target=target, restore_schema=True,
                     time=at, replay_commitlogs=True, cluster_block="cdc-shipper")
    with connect(cluster_block) as session:
        assert {r.id for r in session.execute(f"SELECT id FROM {target}")} == set(range(80))
