"""backup-snapshot: hosts in parallel; per host
    both:        clear-leftover-snapshots (dmf snapshots of crashed runs), abort-stale-uploads (once), beside the rest
    full:        take-snapshot (backups/ listed, snapshot, listed) → upload-set → seal-set
                                                                    upload-set → clear-snapshot (beside the seal)
    incremental: flush-and-list-backups → upload-set → seal-set
    deletes:     read-open-chains (once, from the start) → per host select-deletable-backups
                 → (after every host's seal-set) delete-uploaded-backups

The seed's rule: incremental when `new` is false and a complete full snapshot of the same
db-target and host set is in the bucket; otherwise a new full snapshot. Bounded: a chain that has
reached the repository's `full_every` (age, increments, bytes) or idled CHAIN_IDLE takes a new full.
"""
from __future__ import annotations

import time
from datetime import datetime

from prefect import allow_failure, flow, get_run_logger
from prefect.utilities.annotations import quote

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.core.catalog import Group
from dmf.core.errors import DmfError, InputError
from dmf.core.keys import SetKind, SetRef
from dmf.core.lifecycle import FullEvery
from dmf.core.plan import CHAIN_IDLE, is_open, recreated_tables
from dmf.core.targets import DbTarget, parse_hosts
from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import connect, describe_schema, live_table_folders, node_facts, user_keyspaces
from dmf.lease import check_lease, cluster_lease, run_holder
from dmf.repository import Repository
from dmf.reporting import publish_summary
from dmf.storage import Storage
from dmf.core.sweep import check_grace, snapshot_tag
from dmf.tasks.snapshot import (clear_leftover_snapshots, clear_snapshot, delete_files, flush_and_list_backups,
                                read_open_chains, select_deletable, take_snapshot)
from dmf.tasks.sweep import abort_stale_uploads
from dmf.tasks.upload import seal_set, upload_set


class BackupFailed(DmfError):
    pass


def check_target(target: DbTarget, tables: dict[str, list[str]]) -> None:
    if not tables:
        raise InputError("the cluster has no user keyspace: nothing to back up")
    if target.keyspace and target.keyspace not in tables:
        raise InputError(f"keyspace {target.keyspace!r} does not exist in the cluster")
    if target.table and target.table not in tables[target.keyspace]:
        raise InputError(f"table {target.keyspace}.{target.table} does not exist in the cluster")


def recent_history(repo: Repository, target: DbTarget, hosts: tuple[str, ...], now: datetime,
                   full_every: FullEvery, live: tuple[str, ...]) -> tuple[Group | None, str, list[Group]]:
    """The newest complete full of this target and host set if its chain goes on (the seed's rule), else
    None and why not; and every data group read on the way to it. Snapshots are read newest first,
    only their fulls' manifests until the lineage's full is found, then that chain whole: a run reads
    back to its own chain, not the whole history. An incomplete set a failed run left is read (and
    cleaned) by the runs after it. A table of the target dropped and created again since the full
    (`live`: the live table folders) ends the chain: its full holds the earlier table."""
    seen: list[Group] = []
    # Fulls only on the way (a few manifests per snapshot), then the found chain whole.
    for fulls in repo.newest_first(kinds={SetKind.SNAPSHOT}):
        seen.extend(fulls.fulls)
        full = fulls.latest_full_for_backup(target, hosts)
        if full is not None:
            catalog = repo.snapshot_catalog(full.snapshot_ts)
            seen.extend(catalog.increments)
            full = catalog.latest_full_for_backup(target, hosts) or full
            # An idle chain is closed: other chains' runs no longer keep the files it would need.
            if not is_open(catalog, full, now):
                return None, (f"the chain of {format_ts(full.snapshot_ts)} has been idle over "
                              f"{CHAIN_IDLE.days} days"), seen
            ended = full_every.due(full, catalog.increments_of(full), now)
            if ended:
                return None, f"the chain of {format_ts(full.snapshot_ts)} has ended: {ended}", seen
            recreated = recreated_tables((e.path for info in full.sets.values()
                                          for e in (info.manifest or repo.read_manifest(info.ref)).files), live)
            if recreated:
                return None, (f"{', '.join(recreated)} was dropped and created again since the full of "
                              f"{format_ts(full.snapshot_ts)}"), seen
            return full, "", seen
    return None, "no complete full of this target and host set", seen


def clean_incomplete(repo: Repository, groups: list[Group], hosts: tuple[str, ...], before: datetime) -> None:
    """Removes the objects of sets a failed run left without a manifest (on these hosts, older than
    the grace period, so a run still uploading elsewhere is never touched)."""
    logger = get_run_logger()
    for group in groups:
        if group.complete or group.time >= before:
            continue
        for node, info in group.sets.items():
            if not info.complete and not info.problem and node in hosts:  # never a set with a manifest
                check_lease(f"removal of incomplete set {info.ref.prefix}")
                removed = repo.delete_set(info.ref)
                logger.info("removed %d object(s) of incomplete set %s", removed, info.ref.prefix)


@flow(name="backup-snapshot")
def backup_snapshot(hosts: str | list[str] | None = None, db_target: str | None = None, new: bool = False,
                    backup_schema: bool = False, cluster_block: str = DEFAULT_BLOCK,
                    repository_block: str = DEFAULT_BLOCK, incomplete_grace_minutes: int = 1440,
                    lease_wait_seconds: int = 600, full_every: str | None = None,
                    max_upload_mib_s: float | None = None) -> dict:
    """Back up HOSTS (comma-separated; default every host of the cluster block) to S3:
    full, or incremental by the seed's rule, and full when the chain reached `full_every` (default:
    the repository block's, e.g. `7d`, `500 increments`, `64GiB`, comma-separated, or `never`). Sets that an earlier failed run left without a
    manifest on these hosts, older than `incomplete_grace_minutes`, are removed first.
    One run at a time per cluster: a run waits up to `lease_wait_seconds` for the one holding
    the cluster, then gives up without doing anything. `max_upload_mib_s` limits each host's upload
    for this run (default: the repository block's)."""
    logger = get_run_logger()
    started = time.monotonic()
    grace = check_grace(incomplete_grace_minutes, "incomplete_grace_minutes")
    target = DbTarget.parse(db_target)
    cluster = CassandraCluster.load(cluster_block)
    host_list = parse_hosts(hosts) if hosts else tuple(h.address for h in cluster.hosts)
    repository = S3Repository.load(repository_block).with_limits(max_upload_mib_s=max_upload_mib_s)
    chain_limit = FullEvery.parse(full_every if full_every is not None else repository.full_every)
    for address in host_list:
        cluster.host(address)

    with connect(cluster) as session:
        facts = node_facts(session)
        keyspaces = user_keyspaces(session)
        check_target(target, {ks: list(session.cluster.metadata.keyspaces[ks].tables) for ks in keyspaces})
        missing = [a for a in host_list if a not in facts]
        if missing:
            raise InputError(f"host(s) {', '.join(missing)} are not members of the cluster")
        schema = describe_schema(session, target, keyspaces) if backup_schema else None
        live = live_table_folders(session, target)
        cluster_name = session.cluster.metadata.cluster_name

    storage = Storage(repository)
    with cluster_lease(storage, cluster_name, run_holder(), lease_wait_seconds):
        repo = Repository(storage)
        now = utcnow()
        seed, why_full, seen = recent_history(repo, target, host_list, now, chain_limit, live)
        clean_incomplete(repo, seen, host_list, now - grace)
        previous = None if new else seed
        incremental = previous is not None
        snapshot_ts = previous.snapshot_ts if incremental else now
        kind = "incremental" if incremental else "full"
        why = "" if incremental else "--new" if new else why_full
        logger.info("%s backup%s of %s on %s under %s", kind, f" ({why})" if why else "", target or "all keyspaces",
                    ", ".join(host_list), format_ts(snapshot_ts))
        if schema is not None:
            repo.write_schema(snapshot_ts, schema)

        tag = snapshot_tag(now)
        # What crashed runs left: multipart uploads past the grace, dmf snapshots on the nodes. Off the
        # critical path: under the lease no other dmf run is live, and neither sweep touches this run's
        # tag or objects, so they run beside the backup.
        finals = [abort_stale_uploads.submit(repository, now, incomplete_grace_minutes)]
        chains = read_open_chains.submit(repository, host_list, snapshot_ts, now)
        finals.append(chains)
        uploads, sealed, taken = {}, {}, {}
        steps: dict[str, list] = {}  # each host's steps up to its seal, in DAG order
        for address in host_list:
            finals.append(clear_leftover_snapshots.submit(cluster, address, keep=tag))
            if incremental:
                ref = SetRef.incremental(snapshot_ts, address, now)
                taken[address] = flush_and_list_backups.submit(cluster, address, target, keyspaces, live)
            else:
                ref = SetRef.snapshot(now, address)
                taken[address] = take_snapshot.submit(cluster, address, tag, target, keyspaces, live)
            # Quoted: the upload starts beside the step before it (its agent starts meanwhile) and waits for it.
            uploads[address] = upload_set.submit(cluster, repository, ref, quote(taken[address]))
            sealed[address] = seal_set.submit(repository, ref, uploads[address], facts[address], str(target), host_list)
            steps[address] = [taken[address], uploads[address], sealed[address]]
            if not incremental:
                # Once the upload ended, worked or not (never leave hard links behind), beside the seal,
                # which reads only the bucket. The snapshot's files are still the node's live SSTables, so
                # clearing the tag loses nothing; a seal that fails fails the run, whose rerun snapshots anew.
                finals.append(clear_snapshot.submit(cluster, address, tag, wait_for=[allow_failure(taken[address]),
                                                                                      allow_failure(uploads[address])]))
        # A backup is complete only when every host's set is: until then no host deletes a backups/
        # file, so a run that fails anywhere deletes nothing anywhere and the next run carries them all.
        # Nor a file another open chain of the node still needs (an ad-hoc `ks.t` chain beside `ks`'s).
        # The other open chains are read from the start, beside the rest: under the lease no other run
        # changes them, and this run's own chain is left out of what they hold. Only the deletes wait
        # for every seal.
        every_seal = list(sealed.values())
        for address in host_list:
            removable = select_deletable.submit(address, taken[address], chains)
            finals.append(delete_files.submit(cluster, address, removable, wait_for=every_seal))

        failures = []
        for address in host_list:
            # The first step that failed names the cause; the steps after it never ran.
            for step in steps[address]:
                try:
                    step.result()
                except Exception as exc:  # noqa: BLE001 — every host's failure is reported, not just the first
                    failures.append(f"{address}: {exc}")
                    break
        for future in finals:
            future.wait()
        if failures:
            raise BackupFailed(f"{kind} backup failed on {len(failures)} host(s); nothing of theirs is "
                               f"marked complete: {'; '.join(failures)}")
    manifests = [f.result() for f in sealed.values()]
    files_count = sum(len(m.files) for m in manifests)
    total = sum(m.total_bytes for m in manifests)
    seconds = time.monotonic() - started
    transfers = [f.result() for f in uploads.values()]
    transfer_seconds = max(t.finished for t in transfers) - min(t.started for t in transfers)
    summary = {"kind": kind, "why_full": why, "snapshot_ts": format_ts(snapshot_ts), "set_ts": format_ts(now),
               "hosts": list(host_list), "db_target": str(target), "files": files_count, "bytes": total,
               "seconds": round(seconds, 2), "transfer_seconds": round(transfer_seconds, 2),
               "mb_per_s": round(total / 1e6 / transfer_seconds, 2) if transfer_seconds > 0 else 0.0}
    logger.info("%s backup complete: %d files, %.1f MiB from %d hosts in %.1fs", kind, files_count,
                total / 2**20, len(host_list), seconds)
    publish_summary("backup-snapshot", summary, f"{kind} backup of {target or 'all keyspaces'}: every object "
                    "verified (size and ETag), manifests written last")
    return summary
