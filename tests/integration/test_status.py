"""backup status on the bed: its own backup's target row and the bytes it added, a shipping run that is
late, and the CLI's exit status and last line for a known problem (a failed run it made itself). The
bucket and the Prefect server are shared with every other test, so each assertion is about what this
test's own runs produced."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from dmf.core.keys import parse_set_prefix
from dmf.core.timestamps import format_ts
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.backup_status import backup_status
from dmf.flows.ship_commitlogs import ship_commitlogs
from dmf.testbed import prefect_server

from .helpers import HOSTS, new_table

pytestmark = pytest.mark.integration
ON_TIME = {"ship-commitlogs": 600}


def newest_status_artifact():
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["backup-status"])),
                                     sort=ArtifactSort.CREATED_DESC, limit=1)[0]


def failed_run_name(state) -> str:
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def test_status_reports_its_own_backup_and_flags_a_late_and_a_failed_run(testbed, cluster_block):
    keyspace, table = new_table(cluster_block, rows=20, prefix="st")
    target = f"{keyspace}.{table}"
    before = backup_status(expected_every=ON_TIME)
    full = backup_snapshot(hosts=HOSTS, db_target=target, new=True)
    shipped = ship_commitlogs(hosts=HOSTS)
    on_time = backup_status(expected_every=ON_TIME)

    shipping = next(f for f in on_time["flows"] if f["flow"] == "ship-commitlogs")
    assert shipping["state"] == "COMPLETED" and shipping["flags"] == []
    [ours] = [t for t in on_time["targets"] if t["db_target"] == target]
    batches = {s["host"]: format_ts(parse_set_prefix(s["prefix"]).time) for s in shipped if s["segments"]}
    assert (ours["hosts"], ours["full"], ours["last_backup"], ours["increments"], ours["flags"]) == \
        (sorted(HOSTS.split(",")), full["snapshot_ts"], full["snapshot_ts"], 0, [])
    assert ours["commitlogs"] == batches  # only this test's batch is as new as its full
    added = full["bytes"] + sum(s["stored_bytes"] for s in shipped if s["segments"])  # segments as stored (gzip)
    assert on_time["repository_bytes"] - before["repository_bytes"] == added
    assert on_time["growth_bytes_7d"] - before["growth_bytes_7d"] == added
    assert not [p for p in on_time["problems"] if p.startswith(f"{target} ")]

    time.sleep(2.5)  # the run is now older than twice the one second it is expected every
    late = backup_status(expected_every={"ship-commitlogs": 1})
    flag = next(p for p in late["problems"] if p.startswith("ship-commitlogs: no completed run for"))
    assert flag.endswith("(scheduled every 1 s)")
    artifact = newest_status_artifact()
    assert artifact.description == f"{len(late['problems'])} problem(s): {late['problems'][0]}"
    assert flag in artifact.data

    # A known problem, whatever other tests left: the newest ship-commitlogs run failed.
    failed = failed_run_name(ship_commitlogs(hosts="127.0.0.9", return_state=True))
    cli = subprocess.run([sys.executable, "-m", "dmf.cli", "backup", "status"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PREFECT_API_URL": prefect_server.api_url(testbed)})
    assert cli.returncode == 1 and "Traceback" not in cli.stdout + cli.stderr
    assert target in cli.stdout and "repository " in cli.stdout
    last_line = cli.stderr.strip().splitlines()[-1]
    assert last_line.startswith("dmf: error: ") and " problem(s): " in last_line
    # The flag names the run and its error, so an operator sees which host and why.
    assert (f"ship-commitlogs: last run {failed} failed: InputError: host '127.0.0.9' is not in the cluster block"
            in last_line)
    ship_commitlogs(hosts=HOSTS)  # the flow's newest run completed again, for whoever reads status next
