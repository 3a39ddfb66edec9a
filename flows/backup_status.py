"""backup-status: health at a glance, published as the `backup-status` artifact
    read-catalog (as backup-list) + each dmf flow's last runs and schedules + newest verify/drill reports
    → status (dmf.status.status_report, which the CLI also calls directly; dmf.core.status decides)."""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from dmf.blocks import DEFAULT_BLOCK, S3Repository
from dmf.copy import copy_lags
from dmf.core.status import status_markdown
from dmf.status import prefect_request, read_facts, read_heartbeats, status_report
from dmf.storage import Storage
from dmf.tasks.verify import read_catalog


@flow(name="backup-status")
def backup_status(expected_every: dict[str, float] | None = None, repository_block: str = DEFAULT_BLOCK) -> dict:
    """Per target and host set: newest full and backup, commit logs per host, restorable window and
    recovery point lag; per dmf flow: its last run; newest verify and drill; repository size and growth.
    Late means older than twice what is expected: the deployments' active schedules, the repository's
    full_every, or `expected_every` (flow name, or `increment` for the target's backups, → seconds)."""
    repository = S3Repository.load(repository_block)
    with prefect_request() as request:
        facts = read_facts(request)
    catalog = read_catalog(repository)
    report = status_report(repository.full_every, catalog, facts, expected_every, read_heartbeats(Storage(repository)))
    report["copies"] = copy_lags(catalog, {name: S3Repository.load(name) for name in repository.copy_to})
    logger = get_run_logger()
    for problem in report["problems"]:
        logger.warning("%s", problem)
    summary = "healthy" if report["healthy"] else f"{len(report['problems'])} problem(s): {report['problems'][0]}"
    logger.info("backup status: %s", summary)
    create_markdown_artifact(key="backup-status", markdown=status_markdown(report), description=summary)
    return report
