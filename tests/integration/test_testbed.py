"""The foundation against the real services: Cassandra cluster, SSH remote layer, S3 repository."""
from __future__ import annotations

import hashlib
import subprocess
import uuid

import pytest
from cassandra import ConsistencyLevel
from cassandra.query import SimpleStatement

from dmf.blocks import CassandraCluster
from dmf.cql import connect
from dmf.ssh import HostKeyRefused, RemoteError, RemoteHost, command_argv

from .helpers import insert_rows, new_table

pytestmark = pytest.mark.integration


def test_three_nodes_up(testbed):
    from dmf.testbed.cassandra import ring_states
    states = ring_states(testbed, testbed.node(1))
    assert states == {"127.0.0.1": "UN", "127.0.0.2": "UN", "127.0.0.3": "UN"}


def test_write_and_read_rows_on_three_nodes(cluster_block):
    keyspace, table = new_table(cluster_block, prefix="t")
    insert_rows(cluster_block, keyspace, table, range(50))  # at CL ALL
    with connect(cluster_block) as session:
        hosts_seen = {h.address for h in session.cluster.metadata.all_hosts() if h.is_up}
        assert hosts_seen == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
        # CL ALL: every one of the three replicas answers the read.
        rows = session.execute(SimpleStatement(f"SELECT id, payload FROM {keyspace}.{table}",
                                               consistency_level=ConsistencyLevel.ALL))
        assert sorted(r.id for r in rows) == list(range(50))
        session.execute(f"DROP KEYSPACE {keyspace}")


def test_nodetool_snapshot_over_ssh(cluster_block):
    keyspace, table = new_table(cluster_block, rows=1, prefix="s")
    host = cluster_block.hosts[1]
    tag = f"itest-{uuid.uuid4().hex[:6]}"
    with RemoteHost(cluster_block, host) as remote:
        nodetool = command_argv(host.nodetool, "-h", host.jmx_host, "-p", str(host.jmx_port))
        remote.run([*nodetool, "snapshot", "-t", tag, keyspace])
        files = remote.list_files(f"{host.data_dirs[0]}/{keyspace}")
        snapshot_files = [f.path for f in files if f"/snapshots/{tag}/" in f.path]
        assert any(p.endswith("manifest.json") for p in snapshot_files)
        assert any(p.endswith("schema.cql") for p in snapshot_files)
        assert any(p.endswith("-Data.db") for p in snapshot_files)
        remote.run([*nodetool, "clearsnapshot", "-t", tag, "--", keyspace])
        assert not [f for f in remote.list_files(f"{host.data_dirs[0]}/{keyspace}") if f"/snapshots/{tag}/" in f.path]
    with connect(cluster_block) as session:
        session.execute(f"DROP KEYSPACE {keyspace}")


def test_remote_arguments_are_quoted(cluster_block):
    hostile = "a b; echo pwned $(id) `id` 'q' \"d\" > /tmp/x"
    with RemoteHost(cluster_block, cluster_block.hosts[0]) as remote:
        result = remote.run(["printf", "%s", hostile])
        assert result.stdout == hostile


def test_remote_failure_surfaces_status_and_stderr(cluster_block):
    with RemoteHost(cluster_block, cluster_block.hosts[0]) as remote:
        with pytest.raises(RemoteError, match=r"exited 2.*No such file"):
            remote.run(["ls", "/nonexistent-dmf-path"])
        assert remote.run(["sh", "-c", "exit 3"], check=False).exit_status == 3


def test_stream_file_in_chunks(cluster_block, testbed, tmp_path):
    payload = tmp_path / "blob.bin"
    data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)
    payload.write_bytes(data)
    with RemoteHost(cluster_block, cluster_block.hosts[2]) as remote:
        chunks = list(remote.iter_file(str(payload), chunk=256 * 1024))
        assert max(len(c) for c in chunks) <= 256 * 1024
        assert b"".join(chunks) == data
        assert remote.stat(str(payload)).st_size == len(data)
        listed = {f.path: f.size for f in remote.list_files(str(tmp_path))}
        assert listed == {"blob.bin": len(data)}
        with pytest.raises(RemoteError, match="cannot read"):
            list(remote.iter_file(str(tmp_path / "missing")))


def test_unknown_host_key_is_refused(cluster_block, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strict = cluster_block.model_copy(update={"known_hosts_path": str(empty), "known_hosts": None})
    with pytest.raises(HostKeyRefused, match="not in known_hosts"):
        RemoteHost(strict, strict.hosts[0]).connect()


def test_mismatched_host_key_is_refused(cluster_block, tmp_path):
    forged = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    pub = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    forged.write_text(f"[127.0.0.1]:{cluster_block.hosts[0].ssh_port} {pub}\n")
    strict = cluster_block.model_copy(update={"known_hosts_path": str(forged), "known_hosts": None})
    with pytest.raises(HostKeyRefused):
        RemoteHost(strict, strict.hosts[0]).connect()


def test_s3_repository_put_and_get(repository_block):
    s3 = repository_block.client()
    key = f"itest/{uuid.uuid4().hex}"
    s3.put_object(Bucket=repository_block.bucket, Key=key, Body=b"hello dmf")
    assert s3.get_object(Bucket=repository_block.bucket, Key=key)["Body"].read() == b"hello dmf"
    s3.delete_object(Bucket=repository_block.bucket, Key=key)


def test_blocks_saved_as_default(testbed):
    from dmf.blocks import DEFAULT_BLOCK, S3Repository
    cluster = CassandraCluster.load(DEFAULT_BLOCK)
    assert [h.address for h in cluster.hosts] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    repo = S3Repository.load(DEFAULT_BLOCK)
    assert repo.bucket == "dmf-backups"
    # Secrets stay secret once loaded back.
    assert "testbed-secret-key" not in repr(repo) and "cassandra" not in repr(cluster.cql_password)


def test_large_command_output_is_read_to_the_end(cluster_block):
    """sshd can send the exit status before the last output: the whole output must still arrive."""
    with RemoteHost(cluster_block, cluster_block.hosts[0]) as remote:
        for _ in range(5):
            result = remote.run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\\\0' 'a'; echo end >&2"])
            assert len(result.stdout) == 3_000_000 and result.stderr == "end\n"
