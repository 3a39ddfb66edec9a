"""backup-status: health at a glance, published as the `backup-status` artifact
    read-catalog (as backup-list) + each dmf flow's last runs and schedules + newest verify/drill reports
    → status (dmf.core.status: ages against the schedule, recovery point lag, flags)."""
from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from dmf import status as facts
from dmf.blocks import DEFAULT_BLOCK, S3Repository
from dmf.core.lifecycle import FullEvery
from dmf.core.status import Schedule, status, status_markdown
from dmf.core.timestamps import utcnow
from dmf.tasks.verify import read_catalog


@flow(name="backup-status")
def backup_status(expected_every: dict[str, float] | None = None, repository_block: str = DEFAULT_BLOCK) -> dict:
    """Per target and host set: newest full and backup, commit logs per host, restorable window and
    recovery point lag; per dmf flow: its last run; newest verify and drill; repository size and growth.
    Late means older than twice what is expected: the deployments' active schedules, the repository's
    full_every, or `expected_every` (flow name, or `increment` for the target's backups, → seconds)."""
    repository = S3Repository.load(repository_block)
    overrides = {name: timedelta(seconds=s) for name, s in (expected_every or {}).items()}
    intervals = {**facts.scheduled_intervals(), **overrides}
    schedule = Schedule.of(FullEvery.parse(repository.full_every),
                           intervals.pop("increment", intervals.get("backup-snapshot", timedelta(hours=1))), intervals)
    report = status(read_catalog(repository), facts.last_runs(), facts.last_checks(), utcnow(), schedule)
    logger = get_run_logger()
    for problem in report["problems"]:
        logger.warning("%s", problem)
    summary = "healthy" if report["healthy"] else f"{len(report['problems'])} problem(s): {report['problems'][0]}"
    logger.info("backup status: %s", summary)
    create_markdown_artifact(key="backup-status", markdown=status_markdown(report), description=summary)
    return report
