"""The CLI's in-process flow runs: Prefect's heartbeats off unless the operator set them."""
from __future__ import annotations

import os
import subprocess
import sys

CHECK = """
from dmf.flow_runs import in_process_flow_runs
from prefect.settings import get_current_settings
before = get_current_settings().flows.heartbeat_frequency
with in_process_flow_runs():
    inside = get_current_settings().flows.heartbeat_frequency
print(before, inside, get_current_settings().flows.heartbeat_frequency)
"""


def settings_seen(env: dict[str, str]) -> list[str]:
    """Before, inside and after the context, in a process of its own (Prefect reads its settings at import)."""
    clean = {k: v for k, v in os.environ.items() if "HEARTBEAT" not in k}
    out = subprocess.run([sys.executable, "-c", CHECK], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def test_heartbeats_are_off_inside_and_back_after():
    before, inside, after = settings_seen({})
    assert inside == "None" and before == after != "None"


def test_a_frequency_the_operator_set_is_kept():
    assert settings_seen({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "45"}) == ["45", "45", "45"]
    assert settings_seen({"PREFECT_RUNNER_HEARTBEAT_FREQUENCY": "60"}) == ["60", "60", "60"]
