"""restore-snapshot: resolve the chain up to `time` → verified parallel download into PATH →
schema (optional) → load (sstableloader, or nodetool import on the same hosts) → commit logs
(fetched with get_commitlogs; replayed to the second with replay_commitlogs, node by node)."""
from __future__ import annotations

import time as clock
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.core.catalog import Catalog, covers, resolve_chain
from dmf.core.errors import DmfError, InputError
from dmf.core.keys import SetKind, schema_key
from dmf.core.targets import DbTarget, parse_hosts
from dmf.core.timestamps import format_ts, parse_ts, utcnow
from dmf.download import check_destination
from dmf.repository import Repository
from dmf.reporting import publish_summary
from dmf.restore_plan import COMMITLOG_DIR, plan_restore
from dmf.storage import Storage
from dmf.cql import connect, node_facts
from dmf.tasks.restore import (apply_schema, download, load_unit_sstableloader, load_units_import,
                               replay_commitlogs_on_host)


LOADERS_AT_ONCE = 3


class RestoreFailed(DmfError):
    pass


def explain_no_chain(catalog: Catalog, target: DbTarget, at) -> InputError:
    covering = [g for g in catalog.fulls if g.complete and covers(g.db_target, target)]
    if not covering:
        return InputError(f"no complete backup covers {target} (see `dmf backup list`)")
    return InputError(f"--time {format_ts(at)} is before the first complete snapshot of {target} "
                      f"({format_ts(covering[0].snapshot_ts)})")


def schema_cql(storage: Storage, snapshot_ts, plan) -> str:
    """The snapshot's schema.cql (--backup-schema), else the tables' own schema.cql from the snapshot."""
    stored = storage.get_bytes(schema_key(snapshot_ts), missing_ok=True)
    if stored is not None:
        return stored.decode()
    pieces = [(u.directory / "schema.cql").read_text() for u in plan.units
              if u.set_name == "full" and (u.directory / "schema.cql").exists()]
    return "\n".join(dict.fromkeys(pieces))


def replay(cluster: CassandraCluster, host_list: tuple[str, ...], plan, at) -> dict[str, int]:
    """Rolling: one node at a time replays its own segments; returns mutations replayed per host."""
    with connect(cluster) as session:
        facts = node_facts(session)
    tables = sorted({f"{u.keyspace}.{u.table}" for u in plan.units})
    by_host_id: dict[str, list[Path]] = {}
    for fetch in plan.commitlog_fetches:
        by_host_id.setdefault(fetch.dest.parent.name, []).append(fetch.dest)
    replayed = {}
    for address in host_list:
        segments = sorted(by_host_id.get(facts[address].host_id, []))
        if segments:
            replayed[address] = replay_commitlogs_on_host(cluster, address, segments, tables, at)
        else:
            get_run_logger().warning("%s: no shipped commit log for its host ID; nothing to replay", address)
    return replayed


@flow(name="restore-snapshot")
def restore_snapshot(hosts: str | list[str], path: str, db_target: str, restore_schema: bool = False,
                     time: str | int | None = None, get_commitlogs: bool = False,
                     mode: Literal["sstableloader", "import"] = "sstableloader",
                     replay_commitlogs: bool = False, cluster_block: str = DEFAULT_BLOCK, repository_block: str = DEFAULT_BLOCK) -> dict:
    """Restore DB_TARGET (keyspace or keyspace.table) into HOSTS as it was at `time` (UTC, default now)."""
    logger = get_run_logger()
    started = clock.monotonic()
    host_list = parse_hosts(hosts)
    target = DbTarget.parse(db_target)
    if target.keyspace is None:
        raise InputError("DB_TARGET is required: keyspace or keyspace.table")
    at = parse_ts(time, name="--time") if time is not None and time != "" else utcnow()
    root = Path(path).expanduser().resolve()
    cluster = CassandraCluster.load(cluster_block)
    repository = S3Repository.load(repository_block)
    for address in host_list:
        cluster.host(address)
    storage = Storage(repository)

    repo = Repository(storage)
    # Read only the history the restore can use: snapshots newest first down to the one that
    # serves, then the commit-log batches since it.
    data, chain = None, None
    for data in repo.newest_first(end=at):
        chain = resolve_chain(data, target, at)
        if chain is not None:
            break
    if chain is None:
        raise explain_no_chain(repo.catalog(kinds={SetKind.SNAPSHOT}), target, at)
    if get_commitlogs or replay_commitlogs:
        batches = repo.catalog(start=chain.full.time, kinds={SetKind.COMMITLOG})
        chain = resolve_chain(Catalog(data.fulls, data.increments, batches.commitlogs), target, at)
    plan = plan_restore(chain, target, root, with_commitlogs=get_commitlogs or replay_commitlogs)
    if not plan.fetches:
        raise InputError(f"the backup {format_ts(chain.full.snapshot_ts)} holds no file of {target}")
    if mode == "import":
        missing = sorted({u.host for u in plan.units} - set(host_list))
        if missing:
            raise InputError(f"--mode import places each host's own files on it: HOSTS must include "
                             f"{', '.join(missing)} (or use the default sstableloader mode)")
    check_destination(root, sum(f.size for f in (*plan.fetches, *plan.commitlog_fetches) if not f.dest.exists()))
    logger.info("restoring %s at %s: full %s + %d increment(s), %d files, %.1f MiB into %s", target,
                format_ts(at), format_ts(chain.full.snapshot_ts), len(chain.increments), len(plan.fetches),
                plan.bytes / 2**20, root)

    resolve_seconds = clock.monotonic() - started
    fetched = download(repository, plan.fetches + plan.commitlog_fetches)
    download_seconds = clock.monotonic() - started - resolve_seconds
    if restore_schema:
        apply_schema(cluster, schema_cql(storage, chain.full.snapshot_ts, plan), target)

    loaded: list[str] = []
    try:
        if mode == "sstableloader":
            # A few loaders at once: each is a JVM streaming to every replica.
            for start in range(0, len(plan.units), LOADERS_AT_ONCE):
                batch = [load_unit_sstableloader.submit(cluster, host_list, unit)
                         for unit in plan.units[start:start + LOADERS_AT_ONCE]]
                for future in batch:
                    loaded.append(future.result())
        else:
            futures = [load_units_import.submit(cluster, address, [u for u in plan.units if u.host == address])
                       for address in host_list if any(u.host == address for u in plan.units)]
            for future in futures:
                loaded.extend(future.result())
    except Exception as exc:
        raise RestoreFailed(
            f"load stopped after {len(loaded)} of {len(plan.units)} table sets ({'; '.join(loaded) or 'none'}): "
            f"{exc}. Files in {root} are verified; rerun the same command to resume (downloads are skipped, "
            "reloading the same SSTables is harmless)") from None

    replayed = replay(cluster, host_list, plan, at) if replay_commitlogs else {}

    seconds = clock.monotonic() - started
    summary = {
        "db_target": str(target), "time": format_ts(at), "snapshot_ts": format_ts(chain.full.snapshot_ts),
        "increments": [format_ts(g.time) for g in chain.increments], "hosts": list(host_list), "mode": mode,
        "files": len(plan.fetches), "bytes": sum(f.size for f in plan.fetches),
        "downloaded_files": fetched["downloaded"],
        "resolve_seconds": round(resolve_seconds, 2), "download_seconds": round(download_seconds, 2),
        "loaded": loaded, "seconds": round(seconds, 2),
        "commitlog_segments": len(plan.commitlog_fetches),
        "commitlog_dir": str(root / COMMITLOG_DIR) if plan.commitlog_fetches else None,
        "replayed_mutations": replayed,
    }
    logger.info("restore of %s complete: %d table sets loaded in %.1fs", target, len(loaded), seconds)
    publish_summary("restore-snapshot", summary, f"restore of {target} as of {format_ts(at)}: every file "
                    "verified against its manifest (size and SHA-256) before loading")
    return summary
