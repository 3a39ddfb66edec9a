"""What `backup status` reads besides the catalog: each dmf flow's last runs, the deployments'
schedules, and the newest verify and drill reports, as the Prefect API's JSON (through Prefect's
client in the flow, dmf.prefect_api in the CLI's direct read); and the report from them."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dmf.core.catalog import Catalog
from dmf.core.errors import LayoutError
from dmf.core.keys import SHIPPER
from dmf.core.lifecycle import FullEvery
from dmf.core.shipper import Heartbeat
from dmf.core.status import LastCheck, LastRun, Schedule, status
from dmf.core.timestamps import utcnow

log = logging.getLogger(__name__)
Request = Callable[[str, str, "dict | None"], Any]  # (method, API path, JSON body) → the response's JSON

FLOWS = ("backup-snapshot", "ship-commitlogs", "ship-commitlogs-continuous", "backup-purge", "backup-verify",
         "restore-drill", "backup-cleanup", "backup-registry", "backup-copy")
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


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def scheduled_intervals(request: Request) -> dict[str, timedelta]:
    """Flow name → the shortest interval among its deployments' active schedules."""
    flows = {f["id"]: f["name"] for f in request("POST", "flows/filter", {})}
    intervals: dict[str, timedelta] = {}
    for deployment in request("POST", "deployments/filter", {}):
        flow = flows.get(deployment["flow_id"])
        for schedule in deployment.get("schedules") or []:
            spec = schedule["schedule"]
            every = (timedelta(seconds=spec["interval"]) if spec.get("interval")
                     else cron_interval(spec["cron"]) if spec.get("cron") else None)
            if flow is not None and schedule["active"] and every is not None:
                intervals[flow] = min(every, intervals.get(flow, every))
    return intervals


def last_runs(request: Request) -> list[LastRun]:
    found = []
    for name in FLOWS:
        runs = [r for r in request("POST", "flow_runs/filter", {"flows": {"name": {"any_": [name]}},
                                                                "sort": "EXPECTED_START_TIME_DESC", "limit": 50})
                if r["state_type"] is not None and r["state_type"] not in NOT_RUN]
        if not runs:
            continue
        completed = next((r for r in runs if r["state_type"] == "COMPLETED"), None)
        newest = runs[0]
        found.append(LastRun(name, newest["state_type"], _time(newest["start_time"] or newest["expected_start_time"]),
                             _time(completed["end_time"]) if completed else None, newest["name"],
                             ((newest.get("state") or {}).get("message") or "")))
    return found


def last_checks(request: Request) -> list[LastCheck]:
    checks = []
    for key in CHECKS:
        newest = request("POST", "artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC",
                                                      "limit": 1})
        checks.append(LastCheck(key, _time(newest[0]["created"]), newest[0]["description"] or "") if newest
                      else LastCheck(key, None))
    return checks


@contextmanager
def prefect_request() -> Iterator[Request]:
    """Requests through Prefect's own client (a flow's settings, an ephemeral server too)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield lambda method, path, body: client.request(method, f"/{path}", json=body).json()


@dataclass(frozen=True)
class Facts:
    intervals: dict[str, timedelta]
    runs: list[LastRun]
    checks: list[LastCheck]


def read_facts(request: Request) -> Facts:
    return Facts(scheduled_intervals(request), last_runs(request), last_checks(request))


def read_heartbeats(storage) -> list[Heartbeat]:
    """The long-lived shipper's heartbeat of each node it ships (dmf.core.shipper), of every cluster."""
    beats = []
    for obj in storage.list_objects(f"{SHIPPER}/"):
        data = storage.get_bytes(obj["Key"], missing_ok=True)
        try:
            if data is not None:
                beats.append(Heartbeat.from_json(obj["Key"], data))
        except LayoutError as exc:
            log.warning("%s; ignored", exc)
    return beats


def status_report(full_every: str, catalog: Catalog, facts: Facts,
                  expected_every: dict[str, float] | None = None, heartbeats: list[Heartbeat] = ()) -> dict:
    """The report of dmf.core.status from the catalog and the API's facts. Late means older than twice
    what is expected: the deployments' active schedules, the repository's full_every, or `expected_every`
    (flow name, or `increment` for the target's backups, → seconds)."""
    overrides = {name: timedelta(seconds=s) for name, s in (expected_every or {}).items()}
    intervals = {**facts.intervals, **overrides}
    schedule = Schedule.of(FullEvery.parse(full_every),
                           intervals.pop("increment", intervals.get("backup-snapshot", timedelta(hours=1))), intervals)
    return status(catalog, facts.runs, facts.checks, utcnow(), schedule, heartbeats)
