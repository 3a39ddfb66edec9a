"""What `backup status` reads besides the catalog: each dmf flow's last runs, the deployments'
schedules, and the newest verify and drill reports (Prefect API)."""
from __future__ import annotations

from datetime import timedelta

from dmf.core.status import LastCheck, LastRun

FLOWS = ("backup-snapshot", "ship-commitlogs", "backup-purge", "backup-verify", "restore-drill", "backup-cleanup",
         "backup-registry")
CHECKS = ("backup-verify", "restore-drill")
NOT_RUN = frozenset({"SCHEDULED", "PENDING", "PAUSED", "CANCELLING"})


def cron_interval(cron: str) -> timedelta:
    """How often a cron schedule fires, from its most frequent field (enough to judge lateness)."""
    minute, hour, day, _, weekday = (cron.split() + ["*"] * 5)[:5]
    if minute == "*" or minute.startswith("*/"):
        return timedelta(minutes=int(minute[2:]) if minute.startswith("*/") else 1)
    if hour == "*" or hour.startswith("*/"):
        return timedelta(hours=int(hour[2:]) if hour.startswith("*/") else 1)
    if day == "*" and weekday == "*":
        return timedelta(days=1)
    return timedelta(days=7) if weekday != "*" else timedelta(days=31)


def scheduled_intervals() -> dict[str, timedelta]:
    """Flow name → the shortest interval among its deployments' active schedules."""
    from prefect.client.orchestration import get_client

    intervals: dict[str, timedelta] = {}
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            flow = client.read_flow(deployment.flow_id).name
            for schedule in client.read_deployment_schedules(deployment.id):
                if not schedule.active:
                    continue
                spec = schedule.schedule
                every = getattr(spec, "interval", None) or (cron_interval(spec.cron) if getattr(spec, "cron", None)
                                                            else None)
                if every is not None:
                    intervals[flow] = min(every, intervals.get(flow, every))
    return intervals


def last_runs() -> list[LastRun]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    found = []
    with get_client(sync_client=True) as client:
        for name in FLOWS:
            runs = [r for r in client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])),
                                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=50)
                    if r.state_type is not None and r.state_type.value not in NOT_RUN]
            if not runs:
                continue
            completed = next((r for r in runs if r.state_type.value == "COMPLETED"), None)
            newest = runs[0]
            found.append(LastRun(name, newest.state_type.value, newest.start_time or newest.expected_start_time,
                                 completed.end_time if completed else None, newest.name,
                                 (newest.state.message or "") if newest.state else ""))
    return found


def last_checks() -> list[LastCheck]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    checks = []
    with get_client(sync_client=True) as client:
        for key in CHECKS:
            newest = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                           sort=ArtifactSort.CREATED_DESC, limit=1)
            checks.append(LastCheck(key, newest[0].created, newest[0].description or "") if newest
                          else LastCheck(key, None))
    return checks
