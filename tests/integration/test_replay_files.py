"""A node's config files through a replay, over the bed's real sshd: replaced whole (a temporary file
renamed over them), so a worker killed at any step never leaves one truncated, and put back from the
original saved beside them, never from a live file a killed run may have left (issue 22, defect 4).
Scratch copies in a folder of their own: the nodes' own files and Cassandra are not touched."""
from __future__ import annotations

import stat
from datetime import datetime, timezone

import paramiko
import pytest

from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.ship_commitlogs import ShippingFailed, ship_commitlogs
from dmf.replay import (ORIGINAL_SUFFIX, _drop_originals, _keep_original, _put_back, replay_properties,
                        without_restore_keys)
from dmf.ssh import TMP_SUFFIX, RemoteHost

from .helpers import HOSTS, new_table

ORIGINAL = "archive_command=/bin/ln %path /var/lib/cassandra/archive/%name\n"


class Killed(BaseException):
    """The worker dies: nothing catches it."""


@pytest.fixture
def remote(testbed, cluster_block):
    with RemoteHost(cluster_block, cluster_block.host(HOSTS.split(",")[0])) as remote:
        scratch = remote.run(["mktemp", "-d"]).stdout.strip()
        try:
            yield remote, scratch
        finally:
            remote.run(["rm", "-rf", "--", scratch])


def read(remote: RemoteHost, path: str) -> str:
    return b"".join(remote.iter_file(path)).decode()


def test_a_replace_killed_mid_write_or_before_its_rename_leaves_the_file_whole(remote, monkeypatch):
    remote, scratch = remote
    path = f"{scratch}/commitlog_archiving.properties"
    remote.replace_file(path, ORIGINAL.encode())
    remote.sftp.chmod(path, 0o640)
    replaying = replay_properties(ORIGINAL, "/restore", datetime(2026, 1, 1, tzinfo=timezone.utc)).encode()

    write = paramiko.SFTPFile.write

    def half_then_killed(self, data):
        write(self, data[:len(data) // 2])
        raise Killed
    monkeypatch.setattr(paramiko.SFTPFile, "write", half_then_killed)
    with pytest.raises(Killed):
        remote.replace_file(path, replaying)
    monkeypatch.undo()
    assert read(remote, path) == ORIGINAL

    def killed(*args):
        raise Killed
    monkeypatch.setattr(remote.sftp, "posix_rename", killed)
    with pytest.raises(Killed):
        remote.replace_file(path, replaying)
    monkeypatch.undo()
    assert read(remote, path) == ORIGINAL and read(remote, path + TMP_SUFFIX) == replaying.decode()

    remote.replace_file(path, replaying)  # the next attempt overwrites the leftover and finishes
    assert read(remote, path) == replaying.decode() and not remote.is_file(path + TMP_SUFFIX)
    assert stat.S_IMODE(remote.stat(path).st_mode) == 0o640


def test_recovery_puts_back_the_saved_original_not_the_live_file(remote):
    remote, scratch = remote
    properties, jvm = f"{scratch}/commitlog_archiving.properties", f"{scratch}/jvm-server.options"
    remote.replace_file(properties, ORIGINAL.encode())
    remote.replace_file(jvm, b"-Xss512k\n")
    assert _keep_original(remote, properties, without_restore_keys) == ORIGINAL
    # What an older dmf killed mid-rewrite left: the live file truncated, as SFTP "wb" does first.
    with remote.sftp.open(properties, "wb"):
        pass
    # The recovery (finish_interrupted's first steps) reads the saved original, not the empty file...
    plain = _keep_original(remote, properties, without_restore_keys)
    assert plain == ORIGINAL == read(remote, properties + ORIGINAL_SUFFIX)
    _put_back(remote, properties, plain, jvm, "-Xss512k\n", f"{scratch}/restore")
    assert read(remote, properties) == ORIGINAL
    # ...and drops it once the node is back: an operator's later edit is never overwritten by it.
    _drop_originals(remote, properties, jvm)
    assert not remote.is_file(properties + ORIGINAL_SUFFIX) and not remote.is_file(jvm + ORIGINAL_SUFFIX)


def test_shipping_fails_a_node_whose_properties_lost_their_archive_command(remote, cluster_block):
    """What a truncated file used to cause, silently: no segment archived, none shipped. Now the shipping
    run fails for that host, naming the file, and `backup status` carries the line."""
    remote, scratch = remote
    address = remote.host.address
    remote.replace_file(f"{scratch}/commitlog_archiving.properties", b"# archive_command lost\n")
    hosts = [h.model_copy(update={"config_dir": scratch}) if h.address == address else h for h in cluster_block.hosts]
    cluster_block.model_copy(update={"hosts": hosts}).save("no-archiving", overwrite=True)
    keyspace, table = new_table(cluster_block)
    backup_snapshot(hosts=address, db_target=f"{keyspace}.{table}")  # shipping needs a full of the host
    with pytest.raises(ShippingFailed, match=f"{address}: {scratch}/commitlog_archiving.properties: it has no "
                                             "archive_command: Cassandra archives no commit-log segment"):
        ship_commitlogs(hosts=address, cluster_block="no-archiving")
