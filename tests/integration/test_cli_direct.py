"""The CLI's read-only commands on the bed answer without the engine what the flows answer, and no
command prints Prefect's run log lines unless -v."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dmf.flows.backup_list import backup_list
from dmf.flows.backup_status import backup_status

from .helpers import HOSTS
from .test_deployments import cli_env

pytestmark = pytest.mark.integration
PREFECT_LINE = (" | INFO ", " | WARNING ", " | ERROR ", "Flow run ", "Encountered exception")


def dmf(testbed, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmf.cli", *args], capture_output=True, text=True, timeout=300,
                          env=cli_env(testbed))


def no_prefect_lines(result: subprocess.CompletedProcess) -> bool:
    return not any(marker in result.stdout + result.stderr for marker in PREFECT_LINE)


def stable(report: dict) -> dict:
    """The status report without what moves with the clock (ages, the report's own time)."""
    return {"targets": [{k: v for k, v in t.items() if not k.endswith("_age") and k != "recovery_point_lag"}
                        for t in report["targets"]],
            "flows": [{k: f[k] for k in ("flow", "state", "at", "completed_at")} for f in report["flows"]],
            "checks": [{k: c[k] for k in ("check", "at", "summary")} for c in report["checks"]],
            "repository_bytes": report["repository_bytes"]}


def test_list_and_status_answer_as_their_flows_do_with_no_run_logs(testbed):
    listed = dmf(testbed, "backup", "list", "--json")
    assert listed.returncode == 0 and listed.stderr == "" and no_prefect_lines(listed), listed.stderr
    assert json.loads(listed.stdout) == backup_list()

    status = dmf(testbed, "backup", "status", "--json")
    assert status.returncode in (0, 1) and no_prefect_lines(status), status.stderr
    assert len(status.stderr.splitlines()) == status.returncode  # the one-line verdict when unhealthy
    assert stable(json.loads(status.stdout)) == stable(backup_status())


def test_a_failed_flow_prints_one_line_and_its_run_logs_only_with_verbose(testbed):
    quiet = dmf(testbed, "restore", "snapshot", HOSTS, "/tmp/x", "nosuchks.t")
    assert quiet.returncode == 2 and no_prefect_lines(quiet), quiet.stderr
    assert quiet.stderr == "dmf: error: no complete backup covers nosuchks.t (see `dmf backup list`)\n"
    verbose = dmf(testbed, "-v", "restore", "snapshot", HOSTS, "/tmp/x", "nosuchks.t")
    assert verbose.returncode == 2 and "Encountered exception during execution" in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == quiet.stderr.strip()
