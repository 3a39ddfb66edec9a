"""The copy run's one step (see dmf.copy for the order and what a kill leaves, dmf.core.copies for the plan)."""
from __future__ import annotations

from dataclasses import asdict

from prefect import get_run_logger, task

from dmf.blocks.s3_repository import S3Repository
from dmf.copy import Copier, copy_all
from dmf.repository import Repository
from dmf.storage import Storage

from dmf.tasks.common import RETRY, TASK_DEFAULTS


@task(name="copy-sets", **TASK_DEFAULTS, **RETRY)
def copy_sets(primary: S3Repository, copy: S3Repository, name: str) -> dict:
    """Every complete set of the primary that the copy lacks and keeps, oldest first; a retry plans again
    and resumes (sets sealed on the copy are skipped, objects copied whole are kept)."""
    copier = Copier(Repository(Storage(primary)), Repository(Storage(copy)))
    refs = copier.plan()
    get_run_logger().info("%d set(s) to copy to %s (%s)", len(refs), name,
                          "server-side" if copier.server_side else "streamed through the manager")
    return asdict(copy_all(copier, name, refs))
