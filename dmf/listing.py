"""`backup list`'s answer, shared by the backup-list flow and the CLI's direct read: the history in a
time window, from the bucket's keys, manifests and catalog index alone."""
from __future__ import annotations

from dmf.core.catalog import KIND_NAMES, ChainSummary, Group, chain_summaries, listed, parse_kind
from dmf.core.keys import SetKind
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts, parse_window
from dmf.repository import Repository
from dmf.s3_settings import S3Settings
from dmf.storage import Storage


def row(group: Group, chain: ChainSummary | None) -> dict:
    """One listed group; the chain fields are set on complete full snapshots only."""
    return {"time": format_ts(group.time), "kind": KIND_NAMES[group.kind], "snapshot_ts": format_ts(group.snapshot_ts),
            "hosts": sorted(group.sets), "db_target": group.db_target, "files": group.files, "bytes": group.bytes,
            "complete": group.complete, "chain_bytes": chain.bytes if chain else None,
            "restorable_from": format_ts(chain.restorable_from) if chain else None,
            "restorable_until": format_ts(chain.restorable_until) if chain else None}


def list_backups(repository: S3Settings, start_time: str | int | None = None, end_time: str | int | None = None,
                 db_target: str | None = None, kind: str | None = None,
                 rescan: bool = False) -> tuple[list[dict], list[str]]:
    """The rows of the window, and why each incomplete set listed is incomplete."""
    start, end = parse_window(start_time, end_time)
    target = DbTarget.parse(db_target)
    wanted_kind = parse_kind(kind) if kind not in (None, "") else None
    catalog = Repository(Storage(repository)).listing_catalog(up_to=end, rescan=rescan)
    chains = chain_summaries(catalog)
    groups = listed(catalog, start, end, wanted_kind, target)
    return ([row(g, chains.get(g.snapshot_ts) if g.kind is SetKind.SNAPSHOT else None) for g in groups],
            [p for g in groups for p in g.problems])
