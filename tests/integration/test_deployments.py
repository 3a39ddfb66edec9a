"""Deployments on the test bed's real Prefect server and worker: schedules, `prefect deployment
run`, `dmf … -a`, and the artifacts a run publishes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from dmf.cql import connect
from dmf.testbed import prefect_server

from .helpers import HOSTS, new_table

pytestmark = pytest.mark.integration
PREFECT = str(Path(sys.executable).with_name("prefect"))


def cli_env(testbed) -> dict:
    return {**os.environ, "PREFECT_API_URL": prefect_server.api_url(testbed)}


def wait_for_run(flow_run_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            time.sleep(0.5)  # one small API read a look: the test goes on as soon as the run ends
    raise AssertionError(f"flow run {flow_run_id} not finished after {timeout}s")


def test_deployments_and_schedules_registered(testbed):
    with get_client(sync_client=True) as client:
        deployments = {}
        for d in client.read_deployments():
            flow = client.read_flow(d.flow_id)
            deployments[f"{flow.name}/{d.name}"] = d
        for name in ("backup-snapshot/on-demand", "backup-snapshot/incremental", "ship-commitlogs/every-minute",
                     "backup-registry/daily", "backup-list/on-demand", "restore-snapshot/restore",
                     "backup-cleanup/weekly", "backup-verify/weekly", "backup-purge/daily", "restore-drill/weekly",
                     "backup-status/every-15-minutes"):
            assert name in deployments, sorted(deployments)
        schedules = {name: client.read_deployment_schedules(deployments[name].id)
                     for name in ("backup-snapshot/incremental", "ship-commitlogs/every-minute", "backup-registry/daily",
                                  "backup-purge/daily")}
    assert schedules["ship-commitlogs/every-minute"][0].schedule.interval.total_seconds() == 60
    assert schedules["backup-snapshot/incremental"][0].schedule.cron == "0 * * * *"
    assert schedules["backup-registry/daily"][0].schedule.cron == "30 2 * * *"
    assert schedules["backup-purge/daily"][0].schedule.cron == "45 3 * * *"


def test_prefect_deployment_run_restores(testbed, cluster_block, shared_chain, tmp_path):
    """The session's shared chain, restored by the deployment to a point between its increment and
    the writes after it: exactly the rows up to that point."""
    target = shared_chain["target"]
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE IF EXISTS {target}")
    # The time goes in as JSON, i.e. an int: the flow must accept it.
    result = subprocess.run(
        [PREFECT, "deployment", "run", "restore-snapshot/restore", "--param", f"time={shared_chain['between_t2_t3a']}",
         "--param", f"hosts={HOSTS}", "--param", f"path={tmp_path}", "--param", f"db_target={target}",
         "--param", "restore_schema=true", "--watch", "--watch-timeout", "600"],
        capture_output=True, text=True, env=cli_env(testbed), timeout=700)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Completed" in result.stdout
    with connect(cluster_block) as session:
        assert {r.id for r in session.execute(f"SELECT id FROM {target}")} == set(range(150))


def test_async_cli_returns_at_once_and_the_run_completes(testbed, cluster_block):
    keyspace, table = new_table(cluster_block, rows=20, prefix="a")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "dmf.cli", "backup", "snapshot", HOSTS, "--db-target",
                             f"{keyspace}.{table}", "-a"], capture_output=True, text=True, env=cli_env(testbed),
                            timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "queued backup-snapshot/on-demand" in result.stdout and "prefect flow-run watch" in result.stdout
    assert elapsed < 30  # queued, not run: the run itself takes longer than the CLI start-up
    flow_run_id = result.stdout.split("(", 1)[1].split(")", 1)[0]
    run = wait_for_run(flow_run_id)
    assert run.state.is_completed(), run.state
    # Filtered on the server: an unfiltered read returns one page, which a busy server fills with others.
    with get_client(sync_client=True) as client:
        ours = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), key=ArtifactFilterKey(any_=["backup-snapshot"])))
    assert ours, "the run published no summary artifact"
    assert f"{keyspace}.{table}" in str(ours[0].data) and "mb_per_s" in str(ours[0].data)


def test_async_without_deployment_is_one_line(testbed):
    env = {**cli_env(testbed), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = subprocess.run([sys.executable, "-m", "dmf.cli", "backup", "list", "-a"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
