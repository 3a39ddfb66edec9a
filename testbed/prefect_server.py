"""A local Prefect server (API + UI) on loopback, and the default profile pointed at it.

Flows run by `dmf`, deployments, workers and the UI then share one API, and no command pays
for a temporary server of its own.
"""
from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from pathlib import Path

from prefect.settings import PREFECT_API_URL, load_current_profile, update_current_profile

from . import procs
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


def start(tb: Testbed) -> None:
    tb.run.mkdir(parents=True, exist_ok=True)
    log = tb.logs / "prefect-server.log"
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_API_URL": "", "PREFECT_UI_API_URL": api_url(tb)}
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
