"""A local Prefect server (API + UI) on loopback with the dmf deployments and a worker, and the
default profile pointed at it.

Flows run by `dmf`, deployments, workers and the UI then share one API, and no command pays
for a temporary server of its own.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, load_current_profile, temporary_settings, update_current_profile

from dmf import procs

from .layout import Testbed


def api_url(tb: Testbed) -> str:
    return f"http://127.0.0.1:{tb.prefect_port}/api"


def _pid_file(tb: Testbed) -> Path:
    return tb.run / "prefect-server.pid"


def is_running(tb: Testbed) -> bool:
    return procs.read_pid(_pid_file(tb)) is not None


def healthy(tb: Testbed) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url(tb)}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def home(tb: Testbed) -> Path:
    return tb.root / "prefect"


def start(tb: Testbed) -> None:
    tb.run.mkdir(parents=True, exist_ok=True)
    home(tb).mkdir(mode=0o700, exist_ok=True)
    log = tb.logs / "prefect-server.log"
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    # Concurrency slots: expired leases revoked within 1 s instead of Prefect's 15 s, and a run queued
    # for a slot asks again within 2 s instead of up to 30 s, so the tests of killed and queued runs
    # wait no longer than the leases make them; leases kept on disk (as the README advises), so a
    # server restarted while a run held a slot still sees the lease lapse and frees the slot. Its
    # database and leases live in the bed (PREFECT_HOME): a new checkout's bed starts from none, as on a
    # fresh machine, whatever another bed left in ~/.prefect, and `make clean` removes them.
    env = {**os.environ, "PREFECT_HOME": str(home(tb)), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1",
           "PREFECT_API_URL": "", "PREFECT_UI_API_URL": api_url(tb),
           "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1",
           "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
           "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}
    procs.spawn([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(tb.prefect_port)],
                log_file=log, pid_file=_pid_file(tb), env=env)
    procs.wait_until(lambda: healthy(tb), what="Prefect server", timeout=120, pid_file=_pid_file(tb), log_file=log)


def point_profile(tb: Testbed) -> None:
    """Sets PREFECT_API_URL in the active profile unless the operator set it to something else."""
    current = load_current_profile().settings.get(PREFECT_API_URL)
    if current in (None, "", api_url(tb)):
        update_current_profile({PREFECT_API_URL: api_url(tb)})


def unpoint_profile(tb: Testbed) -> None:
    if load_current_profile().settings.get(PREFECT_API_URL) == api_url(tb):
        update_current_profile({PREFECT_API_URL: None})


def stop(tb: Testbed) -> bool:
    return procs.stop(_pid_file(tb), marker="server")


PREFECT_FILE = Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml"
WORK_POOL = "dmf"


def _prefect_cli(tb: Testbed, *args: str) -> subprocess.CompletedProcess:
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    env = {**os.environ, "PREFECT_API_URL": api_url(tb), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return subprocess.run([prefect, *args], capture_output=True, text=True, env=env,
                          cwd=PREFECT_FILE.parent.parent, timeout=300)


def deploy(tb: Testbed) -> None:
    """The `dmf` process work pool and every deployment of deployments/prefect.yaml, schedules paused
    so the bed's schedules never race the tests (`prefect deployment schedule resume` turns one on)."""
    created = _prefect_cli(tb, "work-pool", "create", WORK_POOL, "--type", "process")
    if created.returncode != 0 and "already exists" not in created.stdout + created.stderr:
        raise procs.StartError(f"prefect work-pool create failed: {(created.stdout + created.stderr)[-1500:]}")
    deployed = _prefect_cli(tb, "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE))
    if deployed.returncode != 0:
        raise procs.StartError(f"prefect deploy failed: {(deployed.stdout + deployed.stderr)[-3000:]}")
    with temporary_settings({PREFECT_API_URL: api_url(tb)}), get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            for schedule in client.read_deployment_schedules(deployment.id):
                if schedule.active:
                    client.update_deployment_schedule(deployment.id, schedule.id, active=False)


def _worker_pid_file(tb: Testbed) -> Path:
    return tb.run / "prefect-worker.pid"


def worker_running(tb: Testbed) -> bool:
    return procs.read_pid(_worker_pid_file(tb)) is not None


def start_worker(tb: Testbed) -> None:
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    env = {**os.environ, "PREFECT_API_URL": api_url(tb), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1",
           # Polled every 10 s by default: a deployment's or `-a` run's start waited ~5 s on average.
           "PREFECT_WORKER_QUERY_SECONDS": "2"}
    procs.spawn([prefect, "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name",
                 f"dmf-testbed-{tb.prefect_port}"], log_file=tb.logs / "prefect-worker.log",
                pid_file=_worker_pid_file(tb), env=env)


def stop_worker(tb: Testbed) -> bool:
    # Prefect's worker outlives SIGTERM and SIGINT for a minute or more (measured: still up after
    # 30 s, idle), which made the session's end ~60 s longer; nothing of the bed's needs it to end
    # gracefully (a flow run it started is in its process group and ends with it).
    return procs.stop(_worker_pid_file(tb), marker="worker", timeout=5)
