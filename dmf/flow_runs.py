"""Prefect settings for the flow runs the CLI starts in its own process."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def in_process_flow_runs() -> Iterator[None]:
    """Prefect's flow-run heartbeats off, unless the operator set their frequency (environment,
    profile or prefect.toml). Prefect joins a run's heartbeat thread at the run's end, and that
    thread sleeps in 1 s steps, so every run ended ~1 s late (a one-second flow took two). Nothing
    of dmf reads the heartbeats: a killed run's clusters are freed by its leases, and an operator
    who runs Prefect's zombie-run automation sets the frequency. Deployment runs, started by a
    worker, keep Prefect's setting."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings
    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
