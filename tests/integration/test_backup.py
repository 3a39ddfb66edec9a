"""backup-snapshot and ship-commitlogs against the three-node test bed."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from cassandra import ConsistencyLevel
from cassandra.concurrent import execute_concurrent_with_args

from dmf.blocks import S3Repository
from dmf.core.catalog import SEGMENTS_CLOSED_AT
from dmf.core.errors import InputError
from dmf.core.keys import SetKind, parse_key
from dmf.core.segments import shipped_segments
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts, parse_ts
from dmf.cql import connect
from dmf.flows.backup_registry import backup_registry
from dmf.flows.backup_snapshot import BackupFailed, backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.flows.ship_commitlogs import ship_commitlogs
from dmf.node_upload import NodeUpload
from dmf.repository import Repository
from dmf.node import Node
from dmf.ssh import RemoteError, RemoteHost
from dmf.storage import Storage

from .helpers import HOSTS, drop_and_restore, ids, insert_rows, keys_under, new_table

pytestmark = pytest.mark.integration
TABLE_DIR = re.compile(r"events-[0-9a-f]{32}")


def catalog(repository_block):
    return Repository(Storage(repository_block)).catalog()


def backups_dir_files(cluster_block, address: str, keyspace: str) -> list[str]:
    host = cluster_block.host(address)
    with RemoteHost(cluster_block, host) as remote:
        return [f.path for f in remote.list_files(f"{host.data_dirs[0]}/{keyspace}") if "/backups/" in f.path]


def snapshots_cassandra_lists(cluster_block, tag: str) -> dict[str, list[str]]:
    """Per node, the tables whose snapshot `tag` the node itself lists (system_views is node-local)."""
    from cassandra.cluster import NoHostAvailable
    listed = {}
    with connect(cluster_block) as session:
        for host in session.cluster.metadata.all_hosts():
            for attempt in range(10):  # the driver may have marked a node down while the bed is loaded
                try:
                    rows = session.execute("SELECT name, keyspace_name, table_name FROM system_views.snapshots",
                                           host=host)
                    break
                except NoHostAvailable:
                    if attempt == 9:
                        raise
                    time.sleep(1)
            listed[host.address] = [f"{r.keyspace_name}.{r.table_name}" for r in rows if r.name == tag]
    return listed


def test_full_then_incremental_then_new(testbed, cluster_block, repository_block):
    keyspace, table = new_table(cluster_block, rows=500)
    target = f"{keyspace}.{table}"

    full = backup_snapshot(hosts=HOSTS, db_target=target, backup_schema=True)
    assert full["kind"] == "full" and full["snapshot_ts"] == full["set_ts"]
    snap = full["snapshot_ts"]
    for address in HOSTS.split(","):
        keys = keys_under(repository_block, f"{snap}/{address}/snapshots/")
        assert f"{snap}/{address}/snapshots/manifest.json" in keys
        data = [k for k in keys if k.endswith("-Data.db")]
        assert data, keys
        for key in data:  # <snapshot_ts>/<host_ip>/snapshots/<ks>/<table>-<id>/<file>
            parts = key.split("/")
            assert parts[:4] == [snap, address, "snapshots", keyspace] and TABLE_DIR.fullmatch(parts[4])
            assert parse_key(key).set.node == address
        # The full snapshot retired the backups/ files it holds.
        assert backups_dir_files(cluster_block, address, keyspace) == []
    # Its snapshot was removed as folders, without nodetool: Cassandra itself no longer lists it.
    assert snapshots_cassandra_lists(cluster_block, f"dmf-{snap}") == {a: [] for a in HOSTS.split(",")}
    schema = repository_block.client().get_object(Bucket=repository_block.bucket, Key=f"{snap}/schema.cql")
    schema_text = schema["Body"].read().decode()
    assert f"CREATE TABLE {keyspace}.{table}" in schema_text and "ID = " in schema_text

    insert_rows(cluster_block, keyspace, table, range(500, 505))
    incr = backup_snapshot(hosts=HOSTS, db_target=target)
    assert incr["kind"] == "incremental" and incr["snapshot_ts"] == snap and incr["set_ts"] > snap
    for address in HOSTS.split(","):
        keys = keys_under(repository_block, f"{snap}/{address}/backups/{incr['set_ts']}/")
        assert f"{snap}/{address}/backups/{incr['set_ts']}/manifest.json" in keys
        assert any(k.endswith("-Data.db") for k in keys)
        # Exactly the uploaded files were removed from backups/.
        assert backups_dir_files(cluster_block, address, keyspace) == []
    # The increment carries only the new SSTable: far smaller than the full.
    assert incr["bytes"] < full["bytes"] / 3

    forced = backup_snapshot(hosts=HOSTS, db_target=target, new=True)
    assert forced["kind"] == "full" and forced["snapshot_ts"] > snap

    groups = [g for g in catalog(repository_block).fulls if g.db_target == target]
    assert [g.complete for g in groups] == [True, True]


def test_db_target_scopes_the_backup(testbed, cluster_block, repository_block, tmp_path):
    keyspace, table = new_table(cluster_block, rows=50)
    with connect(cluster_block) as session:
        session.execute(f"CREATE TABLE {keyspace}.other (id int PRIMARY KEY)")
        session.execute(f"INSERT INTO {keyspace}.other (id) VALUES (1)")
    summary = backup_snapshot(hosts="127.0.0.1", db_target=f"{keyspace}.{table}")
    keys = keys_under(repository_block, f"{summary['snapshot_ts']}/127.0.0.1/snapshots/")
    dirs = {k.split("/")[4] for k in keys if k.count("/") >= 5}
    assert dirs and all(d.startswith("events-") for d in dirs)
    manifest = json.loads(repository_block.client().get_object(
        Bucket=repository_block.bucket, Key=f"{summary['snapshot_ts']}/127.0.0.1/snapshots/manifest.json")["Body"].read())
    assert manifest["db_target"] == f"{keyspace}.{table}" and manifest["hosts"] == ["127.0.0.1"]
    assert re.fullmatch(r"[0-9a-f-]{36}", manifest["host_id"]) and manifest["cassandra_version"].startswith("5.0")
    assert manifest["tokens"] == ["-9223372036854775808"]
    # That one host's full never silently stands in for the three-node target.
    with pytest.raises(InputError, match=r"taken on 1 of this cluster's 3 nodes \(not on 127.0.0.2, 127.0.0.3\)"):
        restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=f"{keyspace}.{table}")
    assert not any(tmp_path.iterdir())  # refused before any download
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])


class S3Recorder:
    """Records completed writes, and fails chosen S3 calls a given number of times."""

    def __init__(self, monkeypatch, fail_op: str | None = None, fail_times: int = 0, key_part: str = ""):
        self.writes: list[str] = []
        self.calls: list[tuple[str, str]] = []  # (operation, key) of requests sent, not URLs presigned
        self.failures_left = fail_times
        self.fail_op, self.key_part = fail_op, key_part
        original = S3Repository.client

        def client(repo, endpoint_url=None):
            s3 = original(repo, endpoint_url)
            # Once per client: dmf shares one client per process, handed out by every client() call.
            s3.meta.events.register("before-parameter-build.s3", self.before, unique_id=f"recorder-before-{id(self)}")
            s3.meta.events.register("after-call.s3", self.after, unique_id=f"recorder-after-{id(self)}")
            return s3
        monkeypatch.setattr(S3Repository, "client", client)
        self._patched = client

    @property
    def active(self) -> bool:
        """Until monkeypatch.undo(): the shared client keeps the handlers, which then do nothing."""
        return S3Repository.client is self._patched

    @property
    def operations(self) -> list[str]:
        return [operation for operation, _ in self.calls]

    def before(self, model, params, context, **_):
        if not self.active:
            return
        context["dmf_key"] = params.get("Key", "")
        if (model.name == self.fail_op and self.failures_left > 0 and self.key_part in params.get("Key", "")):
            self.failures_left -= 1
            from botocore.exceptions import EndpointConnectionError
            raise EndpointConnectionError(endpoint_url="injected-fault")

    def after(self, model, http_response, context, **_):
        if not self.active:
            return
        self.calls.append((model.name, context["dmf_key"]))
        if model.name in ("PutObject", "CompleteMultipartUpload") and http_response.status_code == 200:
            self.writes.append(context["dmf_key"])


def test_manifest_last_and_s3_fault_retried(testbed, cluster_block, repository_block, monkeypatch):
    """Through the manager, where every write is a request this process sends and can fail."""
    keyspace, table = new_table(cluster_block, rows=200)
    repository_block.model_copy(update={"upload_from_nodes": False}).save("via-manager", overwrite=True)
    recorder = S3Recorder(monkeypatch, fail_op="PutObject", fail_times=2, key_part="-Data.db")
    summary = backup_snapshot(hosts="127.0.0.2", db_target=f"{keyspace}.{table}", repository_block="via-manager")
    assert recorder.failures_left == 0  # the fault really happened, and the retry completed
    prefix = f"{summary['snapshot_ts']}/127.0.0.2/snapshots/"
    ours = [k for k in recorder.writes if k.startswith(prefix)]
    assert ours[-1] == prefix + "manifest.json"
    keys = keys_under(repository_block, prefix)
    assert sorted(set(ours)) == sorted(keys)  # nothing stray, nothing missing
    manifest = Repository(Storage(repository_block)).read_manifest(parse_key(prefix + "manifest.json").set)
    assert {prefix + f.path for f in manifest.files} | {prefix + "manifest.json"} == set(keys)


def test_dropped_ssh_connection_is_retried(testbed, cluster_block, repository_block, monkeypatch):
    """The connection really goes away mid-transfer, bytes streaming through the manager."""
    keyspace, table = new_table(cluster_block, rows=200)
    repository_block.model_copy(update={"upload_from_nodes": False}).save("via-manager", overwrite=True)
    original = RemoteHost.iter_file
    dropped = []

    def flaky(self, path, size=None):
        if path.endswith("-Data.db") and not dropped:
            dropped.append(path)
            self.client.get_transport().close()
        yield from original(self, path, size)
    monkeypatch.setattr(RemoteHost, "iter_file", flaky)
    summary = backup_snapshot(hosts="127.0.0.3", db_target=f"{keyspace}.{table}", repository_block="via-manager")
    assert dropped and summary["files"] > 0
    assert full_group(repository_block, summary, f"{keyspace}.{table}").complete


def test_snapshot_retried_after_its_tag_was_taken_starts_from_a_clean_tag(testbed, cluster_block, repository_block,
                                                                          monkeypatch):
    """The first attempt snapshots, then fails listing: the retry clears the tag it left and snapshots again."""
    keyspace, table = new_table(cluster_block, rows=50)
    original = Node.snapshot_and_backup_files
    failed = []

    def fail_once(self, tag, target, live):
        if not failed:
            failed.append(tag)
            raise RemoteError("listing dropped")
        return original(self, tag, target, live)
    monkeypatch.setattr(Node, "snapshot_and_backup_files", fail_once)
    summary = backup_snapshot(hosts="127.0.0.2", db_target=f"{keyspace}.{table}")
    assert failed and summary["files"] > 0
    assert full_group(repository_block, summary, f"{keyspace}.{table}").complete


def test_dropped_ssh_connection_to_uploading_node_is_retried(testbed, cluster_block, repository_block, monkeypatch):
    """The connection to the node's upload agent goes away once it has started: the agent stops, the
    manager aborts what was unfinished, and the retry completes the set."""
    keyspace, table = new_table(cluster_block, rows=200)
    original = NodeUpload._open
    dropped = []

    def flaky(self, upload):
        urls = original(self, upload)
        if upload.key.endswith("-Data.db") and not dropped:
            dropped.append(upload.key)
            self.remote.client.get_transport().close()
        return urls
    monkeypatch.setattr(NodeUpload, "_open", flaky)
    summary = backup_snapshot(hosts="127.0.0.3", db_target=f"{keyspace}.{table}")
    assert dropped and summary["files"] > 0
    assert full_group(repository_block, summary, f"{keyspace}.{table}").complete


def full_group(repository_block, summary, db_target):
    return next(g for g in catalog(repository_block).fulls
                if g.snapshot_ts.strftime("%Y%m%d%H%M%S") == summary["snapshot_ts"] and g.db_target == db_target)


def test_failed_host_leaves_nothing_complete(testbed, cluster_block, repository_block, monkeypatch):
    keyspace, table = new_table(cluster_block, rows=100)
    target = f"{keyspace}.{table}"
    # 127.0.0.1's manifest can never be written: that host fails after its retries.
    S3Recorder(monkeypatch, fail_op="PutObject", fail_times=100, key_part="127.0.0.1/snapshots/manifest.json")
    with pytest.raises(BackupFailed, match="127.0.0.1"):
        backup_snapshot(hosts=HOSTS, db_target=target)
    monkeypatch.undo()
    cat = catalog(repository_block)
    groups = [g for g in cat.fulls if g.db_target == target]
    assert len(groups) == 1 and not groups[0].complete
    assert cat.latest_full_for_backup(DbTarget.parse(target), HOSTS.split(",")) is None
    failed_prefix = f"{groups[0].snapshot_ts.strftime('%Y%m%d%H%M%S')}/127.0.0.1/snapshots/"
    assert keys_under(repository_block, failed_prefix)  # data objects without a manifest
    # The next run does not build on the incomplete set: it takes a new full snapshot, and leaves the set
    # to a sweep past the grace (its upload could be another run's, still live, for all the bucket tells).
    assert backup_snapshot(hosts=HOSTS, db_target=target)["kind"] == "full"
    assert keys_under(repository_block, failed_prefix)


def test_commitlogs_shipped_after_writes(testbed, cluster_block, repository_block):
    keyspace, table = new_table(cluster_block)
    backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}")
    # ~3 MiB of writes per replica closes several 1 MiB segments on every node (in 10 kB rows: the
    # round trips at CL ALL, not the bytes, are what cost).
    insert_rows(cluster_block, keyspace, table, range(300), payload="c" * 10_000)
    results = ship_commitlogs(hosts=HOSTS)
    assert {r["host"] for r in results} == set(HOSTS.split(","))
    for r in results:
        assert r["segments"] >= 1, r
        keys = keys_under(repository_block, r["prefix"])
        segments = [k for k in keys if re.search(r"/CommitLog-\d+-\d+\.log\.gz$", k)]  # gzip by default
        assert len(segments) == r["segments"] and r["prefix"] + "manifest.json" in keys
        assert r["stored_bytes"] < r["bytes"], r  # compressed (the ratio depends on what else the node wrote)
        assert r["prefix"].split("/")[1] == r["host_id"] and r["prefix"].split("/")[2] == "commitlogs"
        host = cluster_block.host(r["host"])
        with RemoteHost(cluster_block, host) as remote:
            left = {f.path for f in remote.list_files(host.commitlog_archive_dir)}
        shipped_names = {k.rsplit("/", 1)[1] for k in segments}
        assert not left & (shipped_names | {n.removesuffix(".gz") for n in shipped_names})  # deleted locally
    # Each batch records when its segments closed, so a restore can skip those older than the snapshot.
    repo = Repository(Storage(repository_block))
    batches = repo.catalog(kinds={SetKind.COMMITLOG}).commitlogs
    shipped = {r["prefix"] for r in results}
    mine = [m for g in batches for m in g.manifests if m.set.prefix in shipped]
    assert len(mine) == 3
    for manifest in mine:
        closed = manifest.extra[SEGMENTS_CLOSED_AT]
        assert set(closed) == {s.segment for s in shipped_segments(manifest)}
        for shipped_segment in shipped_segments(manifest)[:2]:  # the record describes the segment inside
            segment_bytes = gzip.decompress(repo.storage.get_bytes(manifest.set.file_key(shipped_segment.stored)))
            assert shipped_segment.compressed and len(segment_bytes) == shipped_segment.size
            assert hashlib.sha256(segment_bytes).hexdigest() == shipped_segment.sha256
        assert all(at <= format_ts(manifest.set.set_ts) for at in closed.values())
        assert max(closed.values()) >= format_ts(manifest.set.snapshot_ts)  # the writes made after the full
    # Scoped reads: only the kinds asked for, one node's, only sets from `start` on; and the newest
    # full found from the newest snapshot down is the one the whole catalog names.
    fulls = repo.catalog(kinds={SetKind.SNAPSHOT})
    assert fulls.commitlogs == [] and fulls.increments == []
    newest = repo.latest_full_of_each(["127.0.0.2", "127.0.0.3"])
    assert {h: g.snapshot_ts for h, g in newest.items()} == \
        {h: fulls.latest_full_any([h]).snapshot_ts for h in ("127.0.0.2", "127.0.0.3")}
    one_node = repo.catalog(kinds={SetKind.COMMITLOG}, node=mine[0].host_id).commitlogs
    assert {n for g in one_node for n in g.sets} == {mine[0].host_id}
    assert {m.set.prefix for g in repo.catalog(start=mine[0].set.set_ts, kinds={SetKind.COMMITLOG}).commitlogs
            for m in g.manifests} >= shipped
    assert repo.catalog(start=mine[0].set.set_ts + timedelta(seconds=1), kinds={SetKind.COMMITLOG}).fulls == []

    # A run that sealed a batch but stopped before deleting the local copies: the next run deletes
    # them without uploading again; a compressed copy whose segment is gone is removed too.
    leftover = mine[0]
    segment = shipped_segments(leftover)[0]
    host = cluster_block.host(leftover.host)
    with RemoteHost(cluster_block, host) as remote:
        path = f"{host.commitlog_archive_dir}/{segment.segment}"
        stored = repo.storage.get_bytes(leftover.set.file_key(segment.stored))
        remote.write_file(path, io.BytesIO(gzip.decompress(stored)))
        remote.write_file(path + ".gz", io.BytesIO(stored))
        remote.write_file(f"{host.commitlog_archive_dir}/CommitLog-7-1.log.gz", io.BytesIO(stored))
        remote.run(["touch", "-d", parse_ts(leftover.extra[SEGMENTS_CLOSED_AT][segment.segment]).isoformat(), path])
    again = ship_commitlogs(hosts=HOSTS)
    assert sum(r["segments"] for r in again) <= 3  # at most a segment closed meanwhile per node
    with RemoteHost(cluster_block, host) as remote:
        assert not remote.is_file(path) and not remote.is_file(path + ".gz")
        assert not remote.is_file(f"{host.commitlog_archive_dir}/CommitLog-7-1.log.gz")
    again_keys = [k for r in again if r["segments"] for k in keys_under(repository_block, r["prefix"])]
    assert not [k for k in again_keys if k.endswith("/" + segment.stored)]


@pytest.mark.parametrize("args,message", [
    (["backup", "snapshot", "127.0.0.1;rm -rf /"], "invalid HOSTS"),
    (["backup", "snapshot", "127.0.0.1,,127.0.0.2"], "invalid HOSTS"),
    (["backup", "snapshot", "127.0.0.1", "--db-target", "a.b.c"], "invalid DB_TARGET"),
    (["backup", "snapshot", "127.0.0.1", "--db-target", "system.local"], "invalid DB_TARGET"),
])
def test_bad_input_is_one_line(args, message):
    result = subprocess.run([sys.executable, "-m", "dmf.cli", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_registry_backup_masks_secrets(testbed, repository_block):
    result = backup_registry()
    keys = keys_under(repository_block, result["prefix"])
    assert result["prefix"] + "manifest.json" in keys
    assert result["prefix"] + "blocks/dmf-s3-repository/default.json" in keys
    assert result["prefix"] + "blocks/dmf-cassandra-cluster/default.json" in keys
    for address in HOSTS.split(","):
        assert f"{result['prefix']}nodes/{address}/cassandra.yaml" in keys
        assert f"{result['prefix']}nodes/{address}/commitlog_archiving.properties" in keys
    s3 = repository_block.client()

    def document(name: str) -> str:
        return s3.get_object(Bucket=repository_block.bucket, Key=f"{result['prefix']}blocks/{name}.json")["Body"].read().decode()
    repo_doc, cluster_doc = document("dmf-s3-repository/default"), document("dmf-cassandra-cluster/default")
    assert "testbed-secret-key" not in repo_doc
    assert json.loads(repo_doc)["credentials"]["aws_secret_access_key"] == "**********"
    assert json.loads(cluster_doc)["cql_password"] == "**********"
    assert json.loads(cluster_doc)["hosts"][0]["address"] == "127.0.0.1"  # the configuration itself is there


def write_large_rows(cluster_block, prefix: str) -> tuple[str, str]:
    """A table with ~11 MiB of incompressible rows per replica: a Data.db of two 5 MiB parts and more.
    Written concurrently, every row on every replica (one at a time cost seconds per table)."""
    keyspace, table = new_table(cluster_block, prefix=prefix)
    with connect(cluster_block) as session:
        insert = session.prepare(f"INSERT INTO {keyspace}.{table} (id, payload) VALUES (?, ?)")
        insert.consistency_level = ConsistencyLevel.ALL
        execute_concurrent_with_args(session, insert, [(i, os.urandom(8000).hex()) for i in range(700)],
                                     concurrency=16, raise_on_first_error=True)
    return keyspace, table


@pytest.fixture(scope="module")
def large_table(testbed, cluster_block) -> str:
    """One large table for the tests of how large files travel: each takes a full of it (`new=True`),
    on a host and through a block of its own, so they need not write ~11 MiB per replica each."""
    keyspace, table = write_large_rows(cluster_block, "large")
    return f"{keyspace}.{table}"


def assert_multipart_and_intact(repository_block, recorder, prefix: str) -> list:
    """The set's files above 5 MiB are multipart objects whose bytes hash to the manifest's SHA-256.
    (Multipart as the requests show: stores differ in the ETag a HEAD reports for one.)"""
    manifest = Repository(Storage(repository_block)).read_manifest(parse_key(prefix + "manifest.json").set)
    big = [f for f in manifest.files if f.size > 5 * 2**20]
    assert big, [f.size for f in manifest.files]
    s3 = repository_block.client()
    for entry in big:
        assert ("CompleteMultipartUpload", prefix + entry.path) in recorder.calls
        head = s3.head_object(Bucket=repository_block.bucket, Key=prefix + entry.path)
        digest = hashlib.sha256()
        for chunk in s3.get_object(Bucket=repository_block.bucket, Key=prefix + entry.path)["Body"].iter_chunks():
            digest.update(chunk)
        assert digest.hexdigest() == entry.sha256 and head["ContentLength"] == entry.size
    return big


def test_large_files_go_in_parallel_parts(testbed, large_table, repository_block, monkeypatch):
    """Through the manager (node uploads off), files larger than a part are streamed once and uploaded
    as multipart, parts in parallel; an injected part failure is retried."""
    repository_block.model_copy(update={"part_size_mib": 5, "upload_from_nodes": False}).save(
        "small-parts", overwrite=True)
    recorder = S3Recorder(monkeypatch, fail_op="UploadPart", fail_times=1)
    summary = backup_snapshot(hosts="127.0.0.1", db_target=large_table, repository_block="small-parts", new=True)
    assert recorder.failures_left == 0
    assert_multipart_and_intact(repository_block, recorder, f"{summary['snapshot_ts']}/127.0.0.1/snapshots/")


def test_large_files_uploaded_by_the_node(testbed, large_table, repository_block, monkeypatch):
    """By default files of 8 MiB and more go from the node straight to S3 (presigned part URLs): no
    part passes through the manager. A part S3 refuses fails the attempt; the retry completes."""
    repository_block.model_copy(update={"part_size_mib": 5}).save("node-parts", overwrite=True)
    recorder = S3Recorder(monkeypatch)
    original, spoiled = Storage.presign_part, []

    def presign(self, key, upload_id, number, expires_s, client=None):
        if not spoiled:  # the first URL names an upload that does not exist: S3 refuses the part
            spoiled.append(key)
            upload_id = "no-such-upload"
        return original(self, key, upload_id, number, expires_s, client)
    monkeypatch.setattr(Storage, "presign_part", presign)
    summary = backup_snapshot(hosts="127.0.0.2", db_target=large_table, repository_block="node-parts", new=True)
    assert spoiled
    assert "CompleteMultipartUpload" in recorder.operations and "UploadPart" not in recorder.operations
    prefix = f"{summary['snapshot_ts']}/127.0.0.2/snapshots/"
    big = assert_multipart_and_intact(repository_block, recorder, prefix)
    assert any(spoiled[0].endswith(entry.path) for entry in big)  # the refused file is there, whole
    # Each object the node stored was checked (HEAD, or the completed multipart's ETag) before the
    # manifest was written, and the manifest was the last write.
    ours = [(op, key) for op, key in recorder.calls if key.startswith(prefix)]
    manifest_at = ours.index(("PutObject", prefix + "manifest.json"))
    assert manifest_at == max(i for i, (op, _) in enumerate(ours) if op in ("PutObject", "CompleteMultipartUpload"))
    checked = {key for op, key in ours[:manifest_at] if op in ("HeadObject", "CompleteMultipartUpload")}
    assert set(keys_under(repository_block, prefix)) - {prefix + "manifest.json"} == checked


@pytest.mark.parametrize("cause", ["no python", "S3 unreachable from the node"])
def test_node_that_cannot_upload_streams_through_the_manager(testbed, cluster_block, repository_block, large_table,
                                                             monkeypatch, cause):
    cluster_name, repository_update = "default", {"part_size_mib": 5}
    if cause == "no python":
        hosts = [h.model_copy(update={"python": "/nonexistent/python3"}) for h in cluster_block.hosts]
        cluster_block.model_copy(update={"hosts": hosts}).save(cluster_name := "no-python", overwrite=True)
    else:
        repository_update["node_endpoint_url"] = "http://127.0.0.1:1"  # nothing listens there
    repository_block.model_copy(update=repository_update).save("fallback", overwrite=True)
    recorder = S3Recorder(monkeypatch)
    summary = backup_snapshot(hosts="127.0.0.3", db_target=large_table, cluster_block=cluster_name,
                              repository_block="fallback", new=True)
    assert "UploadPart" in recorder.operations  # the manager sent the large file's parts itself
    assert_multipart_and_intact(repository_block, recorder, f"{summary['snapshot_ts']}/127.0.0.3/snapshots/")


def test_failed_incremental_deletes_nothing_and_the_next_carries_it(testbed, cluster_block, repository_block,
                                                                     monkeypatch, tmp_path):
    """RF=1 on three nodes, so each row is on one node only. An incremental whose third host fails at
    its manifest is never complete: the other hosts must keep their backups/ files for the next run."""
    keyspace, table = new_table(cluster_block, prefix="rf1")
    target = f"{keyspace}.{table}"
    with connect(cluster_block) as session:
        session.execute(f"ALTER KEYSPACE {keyspace} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    insert_rows(cluster_block, keyspace, table, range(0, 100))
    backup_snapshot(hosts=HOSTS, db_target=target, backup_schema=True, new=True)
    insert_rows(cluster_block, keyspace, table, range(100, 200))
    S3Recorder(monkeypatch, fail_op="PutObject", fail_times=100, key_part="127.0.0.3/backups/")
    with pytest.raises(BackupFailed, match="127.0.0.3"):
        backup_snapshot(hosts=HOSTS, db_target=target)
    monkeypatch.undo()
    for address in ("127.0.0.1", "127.0.0.2"):
        assert backups_dir_files(cluster_block, address, keyspace), f"{address} deleted its backups/ files"
    insert_rows(cluster_block, keyspace, table, range(200, 250))
    assert backup_snapshot(hosts=HOSTS, db_target=target)["kind"] == "incremental"
    drop_and_restore(cluster_block, tmp_path, target)
    assert ids(cluster_block, target) == set(range(250))


def sai_query_when_built(cluster_block, query: str, timeout: float = 120) -> dict:
    """The index is created after the load and built from the data in the background: poll until it answers."""
    from cassandra import InvalidRequest, ReadFailure
    deadline = time.monotonic() + timeout
    with connect(cluster_block) as session:
        while True:
            try:
                return {r.id: r for r in session.execute(query)}
            except (InvalidRequest, ReadFailure):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def test_cassandra5_table_with_sai_udt_and_collection_round_trips(testbed, cluster_block, repository_block,
                                                                  tmp_path):
    """SAI components are named `…-SAI+aa+…`: the backup takes them, and a restore with --schema
    recreates the type, the table and the index, which answers queries again."""
    from dmf.flows.restore_snapshot import restore_snapshot
    keyspace, _ = new_table(cluster_block, prefix="sai")
    target = f"{keyspace}.people"
    with connect(cluster_block) as session:
        session.execute(f"CREATE TYPE {keyspace}.address (street text, city text)")
        session.execute(f"CREATE TABLE {target} (id int PRIMARY KEY, name text, tags set<text>, "
                        "home frozen<address>)")
        session.execute(f"CREATE INDEX people_by_name ON {target} (name) USING 'sai'")
        insert = session.prepare(f"INSERT INTO {target} (id, name, tags, home) VALUES (?, ?, ?, ?)")
        for i in range(60):
            session.execute(insert, (i, f"n{i % 5}", {f"t{i}", "all"}, (f"{i} main st", "paris")))
    summary = backup_snapshot(hosts=HOSTS, db_target=target, backup_schema=True, new=True)
    keys = keys_under(repository_block, f"{summary['snapshot_ts']}/127.0.0.1/snapshots/")
    assert any("-SAI+" in k for k in keys), keys
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {target}")
        session.execute(f"DROP TYPE {keyspace}.address")
    restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=target, restore_schema=True)
    rows = sai_query_when_built(cluster_block, f"SELECT id, tags, home FROM {target} WHERE name = 'n3'")
    assert set(rows) == {i for i in range(60) if i % 5 == 3}
    assert rows[3].tags == {"t3", "all"} and rows[3].home.city == "paris"


def test_deterministic_error_fails_at_once_naming_its_cause(testbed, cluster_block, repository_block, monkeypatch):
    """A file whose name cannot be a key is not retried three times: the run fails on the first
    attempt, and the error names the file, not Prefect's state of a task that never ran."""
    import dmf.tasks.upload as upload_module
    keyspace, table = new_table(cluster_block, rows=20)
    target = f"{keyspace}.{table}"
    backup_snapshot(hosts=HOSTS, db_target=target, new=True)
    host = cluster_block.host("127.0.0.2")
    with RemoteHost(cluster_block, host) as remote:
        table_dir = remote.run(["sh", "-c", f"ls -d {host.data_dirs[0]}/{keyspace}/{table}-*"]).stdout.strip()
        stray = f"{table_dir}/backups/stray copy.db"
        remote.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && echo x > "$1"', "sh", stray])
    attempts = []
    original = upload_module.upload_files

    def counting(*args, **kwargs):
        attempts.append(args[1].address)
        return original(*args, **kwargs)
    monkeypatch.setattr(upload_module, "upload_files", counting)
    try:
        with pytest.raises(BackupFailed) as failed:
            backup_snapshot(hosts=HOSTS, db_target=target)
    finally:
        with RemoteHost(cluster_block, host) as remote:
            remote.run(["rm", "-f", "--", stray])
    assert attempts.count("127.0.0.2") == 1, attempts
    assert "stray copy.db" in str(failed.value) and "PENDING" not in str(failed.value)
    monkeypatch.undo()
    assert backup_snapshot(hosts=HOSTS, db_target=target)["kind"] == "incremental"


def test_wrong_data_dirs_fail_instead_of_an_empty_backup(testbed, cluster_block, repository_block):
    keyspace, table = new_table(cluster_block, rows=10)
    hosts = [h.model_copy(update={"data_dirs": ["/nonexistent/cassandra/data"]}) for h in cluster_block.hosts]
    cluster_block.model_copy(update={"hosts": hosts}).save("wrong-data-dirs", overwrite=True)
    with pytest.raises(BackupFailed, match="no folder for keyspace .* /nonexistent/cassandra/data"):
        backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}", cluster_block="wrong-data-dirs", new=True)
    assert not [g for g in catalog(repository_block).fulls if g.db_target == f"{keyspace}.{table}" and g.complete]


def test_overlapping_chains_keep_what_the_other_needs(testbed, cluster_block, repository_block, tmp_path):
    """A chain of `ks` and an ad-hoc chain of `ks.t`: the `ks.t` incremental must not delete the
    flushed SSTables the `ks` chain has not taken yet."""
    keyspace, table = new_table(cluster_block, rows=50, prefix="ov")
    backup_snapshot(hosts=HOSTS, db_target=keyspace, backup_schema=True, new=True)
    backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}", new=True)
    insert_rows(cluster_block, keyspace, table, range(50, 120))
    assert backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}")["kind"] == "incremental"
    assert backup_snapshot(hosts=HOSTS, db_target=keyspace)["kind"] == "incremental"
    drop_and_restore(cluster_block, tmp_path, f"{keyspace}.{table}", db_target=keyspace)
    assert ids(cluster_block, f"{keyspace}.{table}") == set(range(120))


def test_a_full_keeps_the_backups_files_of_a_table_dropped_before_any_incremental_took_them(
        testbed, cluster_block, repository_block):
    """issue 22, defect 3: a full deleted every backups/ file listed before its snapshot, so the SSTables a
    table flushed after the last incremental and before it was dropped (never uploaded, absent from the
    full) were lost. Only what the full holds may go; the rest waits for the next incremental."""
    keyspace, _ = new_table(cluster_block, rows=20, prefix="dropped")
    with connect(cluster_block) as session:
        session.execute(f"CREATE TABLE {keyspace}.gone (id int PRIMARY KEY, payload text)")
    insert_rows(cluster_block, keyspace, "gone", range(30))
    addresses = HOSTS.split(",")
    for address in addresses:
        with RemoteHost(cluster_block, cluster_block.host(address)) as remote:
            Node(remote).flush(DbTarget(keyspace), [])
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {keyspace}.gone")
    flushed = {a: [p for p in backups_dir_files(cluster_block, a, keyspace) if p.startswith("gone-")] for a in addresses}
    assert all(flushed.values()), flushed
    assert backup_snapshot(hosts=HOSTS, db_target=keyspace, new=True)["kind"] == "full"
    for address in addresses:
        left = backups_dir_files(cluster_block, address, keyspace)
        assert set(flushed[address]) <= set(left), f"{address} deleted a dropped table's files no backup holds"
        assert not [p for p in left if p.startswith("events-")], f"{address} kept files the full holds"


def test_a_table_dropped_and_created_again_under_its_name_backs_up_only_the_new_tables_files(
        testbed, cluster_block, repository_block):
    """DROP TABLE leaves the table's folder (`events-<old id>`) with its backups/ files; the table created
    again under the same name writes to `events-<new id>`. Both folders' backups/ files used to go into
    the new table's incremental, and a restore then brought the dropped table's rows back into it
    (found by a second `make demo` on one bed: 300 rows written after the point in time, from the
    demo run before). Now only the new table's folder is its; the old one's files stay on the nodes.
    Created again inside a chain, the table ends the chain: the next backup is a full."""
    keyspace, table = new_table(cluster_block, rows=20, prefix="again")
    addresses = HOSTS.split(",")
    for address in addresses:
        with RemoteHost(cluster_block, cluster_block.host(address)) as remote:
            Node(remote).flush(DbTarget(keyspace, table), [])
    with connect(cluster_block) as session:
        old_id = session.execute("SELECT id FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
                                 (keyspace, table)).one().id.hex
        session.execute(f"DROP TABLE {keyspace}.{table}")
        session.execute(f"CREATE TABLE {keyspace}.{table} (id int PRIMARY KEY, payload text)")
        new_id = session.execute("SELECT id FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
                                 (keyspace, table)).one().id.hex
    old_folder_files = {a: [p for p in backups_dir_files(cluster_block, a, keyspace) if f"-{old_id}/" in p]
                        for a in addresses}
    assert all(old_folder_files.values()), old_folder_files  # what the old code took into the new table's sets
    insert_rows(cluster_block, keyspace, table, range(100, 110))
    full = backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}", new=True)
    insert_rows(cluster_block, keyspace, table, range(200, 210))
    incremental = backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}")
    assert incremental["kind"] == "incremental"
    repo = Repository(Storage(repository_block))
    group = full_group(repository_block, full, f"{keyspace}.{table}")
    sets = [*group.sets.values(), *(s for inc in catalog(repository_block).increments_of(group) for s in inc.sets.values())]
    assert len(sets) == 2 * len(addresses)
    folders = {f.path.split("/")[1] for info in sets for f in (info.manifest or repo.read_manifest(info.ref)).files}
    assert folders == {f"{table}-{new_id}"}
    for address in addresses:
        left = backups_dir_files(cluster_block, address, keyspace)
        assert set(old_folder_files[address]) <= set(left), f"{address} deleted the old table's files"
    # Created again inside the chain: the chain's full holds the table before, so the next backup is a full.
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {keyspace}.{table}")
        session.execute(f"CREATE TABLE {keyspace}.{table} (id int PRIMARY KEY, payload text)")
    insert_rows(cluster_block, keyspace, table, range(300, 305))
    after = backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}")
    assert after["kind"] == "full"
    assert after["why_full"] == (f"{keyspace}.{table} was dropped and created again since the full of "
                                 f"{full['snapshot_ts']}")
