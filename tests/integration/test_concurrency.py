"""One writing run per cluster, each guard tested alone: Prefect's concurrency limit queues runs of one
server with the bucket lease switched off, and the bucket lease serialises runs that no Prefect limit
holds back; a lease held elsewhere refuses a run in one line."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest

from dmf.core.keys import leases_prefix
from dmf.core.lease import SKEW_S, Lease
from dmf.core.timestamps import utcnow
from dmf.cql import connect
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.lease import LEASE_TTL_S, ClusterBusy, bucket_lease
from dmf.storage import Storage

from .helpers import HOSTS, insert_rows, new_table

pytestmark = pytest.mark.integration

# The real CLI with one of the two guards switched off, so that the other alone must serialise the runs.
WITHOUT = {
    "bucket lease": """
import contextlib
import dmf.lease as lease
@contextlib.contextmanager
def no_bucket_lease(*args, **kwargs):  # never lapses, as far as check_lease can tell
    held = lease.HeldLease(None, None, float("inf"), lease.Clocks())
    token = lease._HELD.set(held)
    try:
        yield held
    finally:
        lease._HELD.reset(token)
lease.bucket_lease = no_bucket_lease
""",
    "prefect limit": """
import contextlib
import prefect.concurrency.sync
prefect.concurrency.sync.concurrency = lambda *args, **kwargs: contextlib.nullcontext()
"""}


def cluster_name(cluster_block) -> str:
    with connect(cluster_block) as session:
        return session.cluster.metadata.cluster_name


@pytest.mark.parametrize("switched_off", list(WITHOUT))
def test_two_runs_at_once_take_turns_under_either_guard_alone(testbed, cluster_block, switched_off):
    """Started together, the second waits for the first: it then sees the first's full and takes an
    incremental on it, instead of both racing on the same tag and backups/ files."""
    keyspace, table = new_table(cluster_block, rows=50)
    script = WITHOUT[switched_off] + "from dmf.cli import main\nmain()\n"
    command = [sys.executable, "-c", script, "backup", "snapshot", HOSTS, "--db-target", f"{keyspace}.{table}"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    kinds = sorted(re.search(r"^(full|incremental) backup \d{14}", out, re.MULTILINE).group(1) for out, _ in outputs)
    assert kinds == ["full", "incremental"], outputs


def test_the_bucket_lease_alone_admits_one_holder_at_a_time_on_s3proxy(testbed, repository_block):
    """Threads racing on the real store, no Prefect limit: their holding intervals never overlap."""
    storage, cluster = Storage(repository_block), f"race-{uuid.uuid4().hex[:8]}"
    start, held, errors = threading.Barrier(3), [], []

    def run(name: str) -> None:
        try:
            start.wait()
            for _ in range(2):
                with bucket_lease(storage, cluster, name, wait_s=120) as lease:
                    entered = time.monotonic()
                    time.sleep(1)
                    lease.check("the end of its turn")
                    held.append((entered, time.monotonic(), name))
        except Exception as exc:  # noqa: BLE001 — reported by the main thread
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(f"run {i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert errors == [] and len(held) == 6, errors
    turns = sorted(held)
    assert all(left[1] <= right[0] for left, right in zip(turns, turns[1:])), turns
    assert list(storage.list_objects(leases_prefix(cluster))) == []


def test_a_lease_held_elsewhere_refuses_the_run_in_one_line(testbed, cluster_block, repository_block):
    keyspace, table = new_table(cluster_block, rows=10)
    storage = Storage(repository_block)
    # A holder on another Prefect server whose wall clock runs an hour behind: its lease is judged by
    # the store's clock, so it is in force all the same.
    behind = utcnow() - timedelta(hours=1)
    foreign = Lease.new(cluster_name(cluster_block), "flow run on another prefect server", "foreign", behind,
                        LEASE_TTL_S)
    storage.put_bytes(foreign.key, foreign.to_json())
    try:
        with pytest.raises(ClusterBusy, match="flow run on another prefect server holds it since") as busy:
            backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}", lease_wait_seconds=0)
        assert "\n" not in str(busy.value) and "nothing was done" in str(busy.value)
        # It crashed after a last write with a 1 s TTL: its lease lapses TTL + SKEW_S after that write,
        # by the store's clock, and the next run, waiting, proceeds then.
        crashed = Lease.new(cluster_name(cluster_block), foreign.holder, "foreign", behind, 1)
        storage.put_bytes(crashed.key, crashed.to_json())
        insert_rows(cluster_block, keyspace, table, range(10, 20))
        assert backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}",
                               lease_wait_seconds=1 + SKEW_S + 30)["kind"] == "full"
    finally:
        storage.delete_keys([foreign.key])
    # The run released its own lease.
    assert [o["Key"] for o in storage.list_objects(foreign.key.rsplit("/", 1)[0] + "/")] == []
