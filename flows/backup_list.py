"""backup-list: the history in a time window, from the bucket's keys and manifests alone."""
from __future__ import annotations

from prefect import flow

from dmf.blocks import DEFAULT_BLOCK, S3Repository
from dmf.core.catalog import Group
from dmf.core.errors import InputError
from dmf.core.keys import SetKind
from dmf.core.timestamps import format_ts, parse_ts
from dmf.repository import Repository
from dmf.storage import Storage

KIND_NAMES = {SetKind.SNAPSHOT: "full", SetKind.INCREMENTAL: "incremental", SetKind.COMMITLOG: "commitlog"}


def row(group: Group) -> dict:
    return {"time": format_ts(group.time), "kind": KIND_NAMES[group.kind], "snapshot_ts": format_ts(group.snapshot_ts),
            "hosts": sorted(group.sets), "db_target": group.db_target, "files": group.files, "bytes": group.bytes,
            "complete": group.complete}


@flow(name="backup-list")
def backup_list(start_time: str | int | None = None, end_time: str | int | None = None,
                repository_block: str = DEFAULT_BLOCK) -> list[dict]:
    """Full snapshots, increments and commit-log batches whose time is in [start_time, end_time] (UTC)."""
    start = parse_ts(start_time, name="--start-time") if start_time not in (None, "") else None
    end = parse_ts(end_time, name="--end-time") if end_time not in (None, "") else None
    if start and end and start > end:
        raise InputError(f"--start-time {format_ts(start)} is after --end-time {format_ts(end)}")
    catalog = Repository(Storage(S3Repository.load(repository_block))).catalog(start, end)
    return [row(g) for g in catalog.all_groups()]
