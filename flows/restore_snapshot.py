"""restore-snapshot: check HOSTS (cluster block, then live ring members) and PATH → resolve the
chain up to `time` → verified parallel download into PATH → schema (optional) → load
(sstableloader, or nodetool import on the same hosts) → commit logs (fetched with get_commitlogs;
replayed to the second with replay_commitlogs: in a scratch Cassandra on the worker whose SSTables are
then loaded, or, replay_on="nodes", on the nodes one by one) → downloaded files removed unless
keep_files (fetched commit logs always stay)."""
from __future__ import annotations

import os
import shlex
import time as clock
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import as_completed

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.core.catalog import Catalog, covers, resolve_chain
from dmf.core.client_encryption import authenticate
from dmf.core.errors import DmfError, InputError
from dmf.core.keys import SetKind
from dmf.core.restore_checks import check_full_covers_ring, check_hosts_in_ring, check_outside_node_dirs, datacenters
from dmf.core.topology import check_replay_nodes, fit_replication
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import NodeFacts
from dmf.download import bytes_missing, check_destination, write_private
from dmf.encryption import expected
from dmf.local import addresses_of, local_node_dirs
from dmf.copy import naming_copies
from dmf.repository import Repository
from dmf.reporting import publish_summary
from dmf.restore_plan import COMMITLOG_DIR, download_dirs, plan_restore
from dmf.storage import Storage
from dmf.core.restore_request import RestoreRequest
from dmf.core.replay_state import (DONE, RESTARTING, STATE_FILE, ReplayState, continue_message,
                                   restarting_hosts)
from dmf.flows import scratch_replay
from dmf.tasks.scratch_replay import remove_scratch
from dmf.tasks.restore import (apply_schema, create_copy, download, finish_interrupted_replay, load_table_sstableloader,
                               load_units_import, remove_downloaded, replay_commitlogs_on_host, ring_view,
                               truncate_tables, unpack_commitlogs)
from dmf.tasks.node_restore import NodePath


LOADERS_AT_ONCE = 3


class RestoreFailed(DmfError):
    pass


def explain_no_chain(catalog: Catalog, target: DbTarget, at) -> InputError:
    covering = [g for g in catalog.fulls if g.complete and covers(g.db_target, target)]
    if not covering:
        return InputError(f"no complete backup covers {target} (see `dmf backup list`)")
    return InputError(f"--time {format_ts(at)} is before the first complete snapshot of {target} "
                      f"({format_ts(covering[0].snapshot_ts)})")


def schema_cql(stored: str | None, plan) -> str:
    """The snapshot's schema.cql (--backup-schema), else the tables' own schema.cql from the snapshot."""
    if stored is not None:
        return stored
    pieces = [(u.directory / "schema.cql").read_text() for u in plan.units
              if u.set_name == "full" and (u.directory / "schema.cql").exists()]
    return "\n".join(dict.fromkeys(pieces))


def replay(cluster: CassandraCluster, host_list: tuple[str, ...], plan, at, facts: dict[str, NodeFacts],
           ring_address: dict[str, str], root: Path, command: str) -> dict[str, int]:
    """Rolling, one node at a time, each replaying its own segments; returns mutations per host.
    Resumable: the state in PATH (dmf.core.replay_state) tells a rerun which nodes are done."""
    tables = sorted({f"{u.keyspace}.{u.table}" for u in plan.units})
    by_host_id: dict[str, list[Path]] = {}
    for segment in plan.segments:
        by_host_id.setdefault(segment.parent.name, []).append(segment)
    state_file = root / STATE_FILE
    state = ReplayState.load(state_file.read_text() if state_file.exists() else None, format_ts(at), tables,
                             str(state_file))

    def save() -> None:
        write_private(state_file, state.to_json())

    for address in host_list:
        node = state.node(address)
        if node.state == RESTARTING:
            mutations = finish_interrupted_replay(cluster, address, tables, at, node.log_offset)
            if mutations is None:
                state.pending(address)
            else:
                state.done(address, mutations)
            save()
        if state.node(address).state == DONE:
            get_run_logger().info("%s: replayed by an earlier run of this restore", address)
            continue
        segments = sorted(by_host_id.get(facts[ring_address[address]].host_id, []))
        if not segments:
            get_run_logger().warning("%s: no shipped commit log for its host ID; nothing to replay", address)
            state.done(address, 0)
            save()
            continue
        try:
            mutations = replay_commitlogs_on_host(cluster, address, segments, tables, at,
                                                  lambda offset, a=address: (state.restarting(a, offset), save()))
        except Exception as exc:  # noqa: BLE001 — one line with where it stopped and how to go on
            raise RestoreFailed(continue_message(address, str(exc), state, host_list, command)) from None
        state.done(address, mutations)
        save()
    # Every node done: a later restore into this PATH starts afresh.
    state_file.unlink()
    return {address: state.node(address).mutations for address in host_list}


def rerun_command(hosts: tuple[str, ...], path: Path, target: DbTarget, at, restore_schema: bool, mode: str,
                  allow_host_subset: bool, cluster_block: str, repository_block: str,
                  max_download_mib_s: float | None = None) -> str:
    """The CLI command that continues this restore (the same run: it resumes where it stopped)."""
    words = ["dmf", "restore", "snapshot", ",".join(hosts), str(path), str(target), "--time", format_ts(at),
             "--replay-commitlogs", "--replay-on", "nodes", *(["--schema"] if restore_schema else []), "--mode", mode,
             *(["--allow-host-subset"] if allow_host_subset else []),
             *(["--max-download-mib-s", f"{max_download_mib_s:g}"] if max_download_mib_s is not None else []),
             "--cluster-block", cluster_block, "--repository-block", repository_block]
    return shlex.join(words)


@flow(name="restore-snapshot")
def restore_snapshot(hosts: str | list[str], path: str, db_target: str, restore_schema: bool = False,
                     time: str | int | None = None, get_commitlogs: bool = False,
                     mode: str = "sstableloader",
                     replay_commitlogs: bool = False, keep_files: bool = False, allow_host_subset: bool = False,
                     dc_map: str | None = None, replication: str | None = None, truncate_first: bool = False,
                     yes: bool = False, into: str | None = None, cluster_block: str = DEFAULT_BLOCK,
                     repository_block: str = DEFAULT_BLOCK, max_download_mib_s: float | None = None,
                     replay_on: str = "scratch") -> dict:
    """Restore DB_TARGET (keyspace or keyspace.table) into HOSTS as it was at `time` (UTC, default now).

    PATH must be absolute. The files downloaded into it are removed after a successful restore
    unless `keep_files`; commit logs fetched into PATH/cassandra_commitlogs/ always stay. A full taken
    on only some of this cluster's nodes is refused unless `allow_host_subset`. With `restore_schema`, a
    keyspace the cluster lacks is created with the backup's replication, checked against this cluster's
    datacenters first, renamed by `dc_map` (old:new,...) or replaced by `replication` (a CQL map).
    `truncate_first` empties the target's tables once the files are downloaded and verified, before
    loading: the backup's rows then replace whatever the tables hold; it needs `yes`. `into` (keyspace.table, in an
    existing keyspace) loads the table's backup into that table instead, created from the backup's
    schema if missing (new table ID, no indexes): the source table is not touched. `max_download_mib_s`
    limits the download from S3 into PATH, in total (default: the repository block's). `replay_on`:
    where `replay_commitlogs` replays, a scratch Cassandra on the worker (default: no node restarted,
    any target) or the nodes themselves (rolling restarts, in place only)."""
    request = RestoreRequest.parse(hosts, os.path.expanduser(path), db_target, time=time, mode=mode,
                                   restore_schema=restore_schema, get_commitlogs=get_commitlogs,
                                   replay_commitlogs=replay_commitlogs, keep_files=keep_files,
                                   allow_host_subset=allow_host_subset, dc_map=dc_map, replication=replication,
                                   truncate_first=truncate_first, yes=yes, into=into,
                                   max_download_mib_s=max_download_mib_s, replay_on=replay_on)
    logger = get_run_logger()
    started = clock.monotonic()
    host_list, target, copy_to = request.hosts, request.target, request.into
    renamed, replaced = request.dc_map, request.replication
    on_nodes = request.replays_on_nodes
    at = request.at or utcnow()
    root = Path(request.path).resolve()
    cluster = CassandraCluster.load(cluster_block)
    repository = S3Repository.load(repository_block).with_limits(max_download_mib_s=max_download_mib_s)
    for address in host_list:
        cluster.host(address)
    check_outside_node_dirs(str(root), local_node_dirs(cluster))
    # Before anything is resolved or downloaded: every host must be a live node of this cluster's ring.
    facts, ring, keyspaces = ring_view(cluster)
    if copy_to is not None and copy_to.keyspace not in keyspaces:
        raise InputError(f"--into {copy_to}: keyspace {copy_to.keyspace} does not exist in this cluster; create it first")
    state_file = root / STATE_FILE
    resuming = restarting_hosts(state_file.read_text() if on_nodes and state_file.is_file() else None)
    ring_address = check_hosts_in_ring(
        {a: addresses_of(a) | addresses_of(cluster.host(a).address) for a in host_list}, ring, resuming)
    storage = Storage(repository)

    repo = Repository(storage)
    # Read only the history the restore can use: snapshots newest first down to the one that
    # serves, then the commit-log batches since it.
    data, chain = None, None
    primary_read = partial(naming_copies, repository, repository_block, target, at, S3Repository.load)
    with primary_read():
        for fulls in repo.newest_first(end=at, kinds={SetKind.SNAPSHOT}):  # fulls' manifests only on the way
            found = resolve_chain(fulls, target, at)
            if found is not None:
                data = repo.snapshot_catalog(found.full.snapshot_ts)
                chain = resolve_chain(data, target, at)
                break
    if chain is None:
        raise explain_no_chain(repo.catalog(kinds={SetKind.SNAPSHOT}), target, at)
    if get_commitlogs or replay_commitlogs:
        batches = repo.catalog(start=chain.full.time, kinds={SetKind.COMMITLOG})
        chain = resolve_chain(Catalog(data.fulls, data.increments, batches.commitlogs), target, at)
    check_full_covers_ring(chain.full.hosts, format_ts(chain.full.snapshot_ts), ring, allow_host_subset)
    plan = plan_restore(chain, target, root, with_commitlogs=get_commitlogs or replay_commitlogs, into=copy_to)
    if not plan.fetches:
        raise InputError(f"the backup {format_ts(chain.full.snapshot_ts)} holds no file of {target}")
    encryption_key = repository.client_key()
    authenticate([*chain.manifests, *(m for group in chain.commitlogs for m in group.manifests)],
                 expected(encryption_key))
    scratch = scratch_replay.preflight(facts, plan) if replay_commitlogs and not on_nodes else None
    if on_nodes:
        check_replay_nodes({s.parent.name for s in plan.segments},
                           {a: facts[ring_address[a]].host_id for a in host_list})
    stored_schema = repo.read_schema(chain.full.snapshot_ts) if restore_schema or copy_to else None
    if restore_schema and stored_schema is not None and target.keyspace not in keyspaces:
        # Checked before anything is downloaded: a keyspace this cluster cannot hold fails here, not mid-load.
        fitted, used = fit_replication(stored_schema, target.keyspace, datacenters(ring), renamed, replaced)
        stored_schema = fitted
        if used:
            logger.info("keyspace %s will be created with replication %s", target.keyspace, used)
    elif renamed or replaced:
        logger.warning("keyspace %s exists in this cluster: its replication is kept, --dc-map/--replication unused",
                       target.keyspace)
    if mode == "import":
        missing = sorted({u.host for u in plan.units} - set(host_list))
        if missing:
            raise InputError(f"--mode import places each host's own files on it: HOSTS must include "
                             f"{', '.join(missing)} (or use the default sstableloader mode)")
    # --mode node: each node fetches its own share (dmf.tasks.node_restore); the worker only the fallbacks'.
    node_path = NodePath.prepare(cluster, repository, plan, root, chain, facts, host_list) if mode == "node" else None
    worker_fetches = node_path.worker_fetches if node_path else plan.fetches
    check_destination(root, bytes_missing(worker_fetches + plan.commitlog_fetches) + (scratch.disk if scratch else 0))
    logger.info("restoring %s at %s: full %s + %d increment(s), %d files, %.1f MiB into %s", target,
                format_ts(at), format_ts(chain.full.snapshot_ts), len(chain.increments), len(plan.fetches),
                plan.bytes / 2**20, root)

    resolve_seconds = clock.monotonic() - started
    with primary_read():
        fetched = download(repository, root, worker_fetches + plan.commitlog_fetches)
        if node_path:
            node_path.fetch()
    unpack_commitlogs(root, plan.unpacks)
    download_seconds = clock.monotonic() - started - resolve_seconds
    cql = schema_cql(stored_schema, plan) if restore_schema or copy_to or scratch else ""
    if restore_schema:
        apply_schema(cluster, cql, target)
    if copy_to is not None:
        create_copy(cluster, cql, target, copy_to)
    if truncate_first and not state_file.is_file():
        # Dies just before: nothing changed. Just after: the tables are empty until a rerun of the same
        # command (files already verified in PATH) truncates again and loads. Cassandra's auto_snapshot
        # (on by default) keeps what was truncated in a `truncated-*` snapshot on every node.
        truncate_tables(cluster, sorted({f"{u.keyspace}.{u.table}" for u in plan.units}))

    loaded: list[str] = []
    try:
        if state_file.is_file() and on_nodes:
            # A replay under way means this restore's load completed: resume the replay alone (a node
            # it left down could not take a stream anyway).
            logger.info("resuming the replay recorded in %s; the data was loaded by the run that began it",
                        state_file)
        elif mode == "sstableloader":
            # One loader per table, a few at once (each is a JVM streaming to every replica); the next
            # starts as soon as any ends, so one large table does not hold back the small ones after it.
            waiting, running = list(plan.tables), []
            while waiting or running:
                while waiting and len(running) < LOADERS_AT_ONCE:
                    running.append(load_table_sstableloader.submit(cluster, host_list, root, waiting.pop(0)))
                finished = next(as_completed(running))
                running.remove(finished)
                loaded.append(finished.result())
        elif node_path:
            loaded.extend(node_path.load(plan.units))
        else:
            futures = [load_units_import.submit(cluster, address, [u for u in plan.units if u.host == address])
                       for address in host_list if any(u.host == address for u in plan.units)]
            for future in futures:
                loaded.extend(future.result())
    except Exception as exc:
        raise RestoreFailed(
            f"load stopped after {len(loaded)} of {len(plan.tables if mode == 'sstableloader' else plan.units)} "
            f"loads ({'; '.join(loaded) or 'none'}): "
            f"{exc}. Files in {root} are verified; rerun the same command to resume (downloads are skipped, "
            "reloading the same SSTables is harmless)") from None

    replayed, replay_report = {}, None
    if scratch:
        # After the chain's load, before any index: the replayed SSTables are streamed like the chain's.
        replay_report = scratch_replay.replay_and_load(scratch, cluster, host_list, root, cql, target, copy_to,
                                                       plan, at)
        loaded.extend(replay_report["loaded"])
        replayed = {h: n["mutations"] for h, n in replay_report["nodes"].items()}
        remove_scratch(root)
    if restore_schema:
        apply_schema(cluster, cql, target, after_load=True)
    if on_nodes:
        command = rerun_command(host_list, root, target, at, restore_schema, mode, allow_host_subset,
                                cluster_block, repository_block, max_download_mib_s)
        replayed = replay(cluster, host_list, plan, at, facts, ring_address, root, command)

    # Only here, once everything succeeded: after a failed load or replay the files stay and the rerun
    # resumes from them. Dies just before: the files stay as with keep_files (a rerun reloads them,
    # harmless). Dies just after, or midway: the data is loaded; a rerun downloads what is gone again.
    # The load folders' links go either way: --keep-files keeps the downloads, and a rerun relinks them.
    removed = remove_downloaded(root, [] if keep_files else [f.dest for f in worker_fetches], plan.load_links,
                                download_dirs(plan, root))
    if node_path:
        node_path.clean_up(keep_files)

    seconds = clock.monotonic() - started
    summary = {
        "db_target": str(target), "into": str(copy_to) if copy_to else None, "time": format_ts(at),
        "snapshot_ts": format_ts(chain.full.snapshot_ts),
        "increments": [format_ts(g.time) for g in chain.increments], "hosts": list(host_list), "mode": mode,
        "files": len(plan.fetches), "bytes": sum(f.size for f in plan.fetches),
        "downloaded_files": fetched["downloaded"],
        "resolve_seconds": round(resolve_seconds, 2), "download_seconds": round(download_seconds, 2),
        "loaded": loaded, "seconds": round(seconds, 2),
        "commitlog_segments": len(plan.segments),
        "commitlog_dir": str(root / COMMITLOG_DIR) if plan.segments else None,
        "replayed_mutations": replayed, "replay": replay_report,
        "path": str(root), "path_peak_bytes": plan.bytes, "kept_files": keep_files, "removed_files": removed,
        **(node_path.summary() if node_path else {}),
    }
    logger.info("restore of %s complete: %s loaded in %.1fs; PATH needed %.1f MiB at peak, "
                "downloaded files %s", target, "; ".join(loaded) or "nothing", seconds, plan.bytes / 2**20,
                "kept" if keep_files else "removed")
    publish_summary("restore-snapshot", summary, f"restore of {target} as of {format_ts(at)}: every file "
                    "verified against its manifest (size and SHA-256) before loading")
    return summary
