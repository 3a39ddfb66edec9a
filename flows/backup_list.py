"""backup-list: the history in a time window, from the bucket's keys, manifests and catalog index alone
(dmf.listing, which the CLI also calls directly)."""
from __future__ import annotations

from prefect import flow, get_run_logger

from dmf.blocks import DEFAULT_BLOCK, S3Repository
from dmf.listing import list_backups


@flow(name="backup-list")
def backup_list(start_time: str | int | None = None, end_time: str | int | None = None,
                db_target: str | None = None, kind: str | None = None, rescan: bool = False,
                repository_block: str = DEFAULT_BLOCK) -> list[dict]:
    """Full snapshots, increments and commit-log batches whose time is in [start_time, end_time] (UTC),
    of one `kind` (full, incremental or commitlog) and holding data of `db_target` (keyspace[.table])
    when given. Each complete full carries its chain's size (with its complete increments) and its
    restorable window (up to its last increment, or the last time all its hosts shipped commit logs).
    `rescan` trusts no catalog index or closed chain summary: every manifest is read, and they are
    written again."""
    rows, problems = list_backups(S3Repository.load(repository_block), start_time, end_time, db_target, kind, rescan)
    logger = get_run_logger()
    for problem in problems:
        logger.warning("listed as incomplete: %s", problem)
    return rows
