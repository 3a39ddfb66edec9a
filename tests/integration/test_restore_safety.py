"""Restore safety on the three-node bed: HOSTS checked against the ring before anything is
downloaded, downloads removed after a successful restore unless kept, a relative PATH refused with -a."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from dmf.blocks import CassandraHost
from dmf.core.errors import InputError
from dmf.cql import connect
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot

from .helpers import HOSTS, new_table

pytestmark = pytest.mark.integration

ROWS = 50
OUTSIDER = "127.0.0.9"  # a loopback address this machine has, where no node runs


def rows(cluster_block, target: str) -> set[int]:
    with connect(cluster_block) as session:
        return {r.id for r in session.execute(f"SELECT id FROM {target}")}


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def backed_up(testbed, cluster_block) -> str:
    keyspace, table = new_table(cluster_block, rows=ROWS, prefix="s")
    target = f"{keyspace}.{table}"
    backup_snapshot(hosts=HOSTS, db_target=target)
    return target


def test_a_host_outside_the_ring_stops_the_restore_before_any_download(backed_up, cluster_block, tmp_path):
    """In the cluster block (that check comes first and passes), but not a node of the ring."""
    block = cluster_block.model_copy(update={"hosts": [*cluster_block.hosts, CassandraHost(address=OUTSIDER)],
                                             "cql_contact_points": HOSTS.split(",")})
    block.save("restore-safety-outsider", overwrite=True)
    path = tmp_path / "restore"
    with pytest.raises(InputError) as info:
        restore_snapshot(hosts=f"127.0.0.1,{OUTSIDER}", path=str(path), db_target=backed_up,
                         cluster_block="restore-safety-outsider")
    assert str(info.value) == (f"HOSTS: {OUTSIDER} is not in the cluster's ring "
                               "(its nodes: 127.0.0.1, 127.0.0.2, 127.0.0.3)")
    assert not path.exists()  # nothing resolved, nothing downloaded, PATH not even made


def test_downloads_are_removed_after_a_successful_restore_unless_kept(backed_up, cluster_block, tmp_path):
    with connect(cluster_block) as session:
        session.execute(f"TRUNCATE {backed_up}")
    # The worker path: every file through PATH (the node path's staged files: test_restore_nodes.py).
    removed_into = tmp_path / "removed"
    summary = restore_snapshot(hosts=HOSTS, path=str(removed_into), db_target=backed_up, mode="sstableloader")
    assert rows(cluster_block, backed_up) == set(range(ROWS))
    assert summary["kept_files"] is False and summary["removed_files"] == summary["files"] > 0
    assert summary["path"] == str(removed_into) and summary["path_peak_bytes"] == summary["bytes"] > 0
    assert list(removed_into.iterdir()) == []  # the snapshot's tree went with its files; PATH stays
    assert mode(removed_into) == 0o700

    kept_into = tmp_path / "kept"
    kept = restore_snapshot(hosts=HOSTS, path=str(kept_into), db_target=backed_up, keep_files=True,
                            mode="sstableloader")
    files = [p for p in kept_into.rglob("*") if p.is_file()]
    dirs = [p for p in kept_into.rglob("*") if p.is_dir()]
    assert kept["kept_files"] is True and kept["removed_files"] == 0 and len(files) == kept["files"]
    assert kept["path_peak_bytes"] == sum(p.stat().st_size for p in files) == summary["path_peak_bytes"]
    assert {mode(p) for p in files} == {0o600} and {mode(d) for d in dirs} == {0o700}
    assert rows(cluster_block, backed_up) == set(range(ROWS))


def test_cli_refuses_async_with_a_relative_path(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dmf.cli", "restore", "snapshot", HOSTS, "restore", "ks.t", "-a"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "dmf: error: PATH 'restore' is relative: a queued or deployed run would resolve it in the Prefect "
        "worker's temporary directory; give an absolute path"]
    assert not (tmp_path / "restore").exists()
