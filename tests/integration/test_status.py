"""backup status on the bed: the artifact flags a shipping run that is late, and the CLI prints it."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from dmf.flows.backup_status import backup_status
from dmf.flows.ship_commitlogs import ship_commitlogs
from dmf.testbed import prefect_server

from .helpers import HOSTS

pytestmark = pytest.mark.integration


def newest_status_artifact():
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["backup-status"])),
                                     sort=ArtifactSort.CREATED_DESC, limit=1)[0]


def test_status_flags_a_late_shipping_run(testbed, cluster_block):
    ship_commitlogs(hosts=HOSTS)
    on_time = backup_status(expected_every={"ship-commitlogs": 600})
    shipping = next(f for f in on_time["flows"] if f["flow"] == "ship-commitlogs")
    assert shipping["state"] == "COMPLETED" and shipping["flags"] == []
    assert on_time["targets"] and on_time["repository_bytes"] > 0

    time.sleep(2.5)  # the run is now older than twice the one second it is expected every
    late = backup_status(expected_every={"ship-commitlogs": 1})
    flag = next(p for p in late["problems"] if p.startswith("ship-commitlogs: no completed run for"))
    assert "(scheduled every 1 s)" in flag
    artifact = newest_status_artifact()
    assert "problem(s)" in artifact.description and flag in artifact.data

    cli = subprocess.run([sys.executable, "-m", "dmf.cli", "backup", "status"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PREFECT_API_URL": prefect_server.api_url(testbed)})
    assert cli.returncode in (0, 1) and "Traceback" not in cli.stdout + cli.stderr
    assert "ship-commitlogs" in cli.stdout and "repository " in cli.stdout
    last_line = (cli.stderr.strip().splitlines() or [""])[-1]
    assert (cli.returncode == 1) == (last_line.startswith("dmf: error:") and "problem(s)" in last_line)
