"""restore-snapshot: request → plan → steps. The request (dmf.core.restore_request) is checked before
anything else; the ring (HOSTS live members) and PATH before anything is resolved; the chain up to
`time`, its files, the schema fit and the disk need (dmf.restore_plan, pure) before any byte moves.
Then: verified parallel download (by default each node fetches its own share; the worker path
downloads into PATH) → schema (optional) → load (each node importing what it staged, or, into another
topology, streaming it with sstableloader on the node; on the worker path sstableloader, or nodetool
import on the same hosts) → commit logs (fetched with get_commitlogs; replayed to the second with
replay_commitlogs: in a scratch Cassandra on the worker whose SSTables are then loaded, or,
replay_on="nodes", on the nodes one by one) → downloaded files removed unless keep_files (fetched
commit logs always stay)."""
from __future__ import annotations

import os
import shlex
import time as clock
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import as_completed

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.copy import naming_copies
from dmf.core.catalog import Catalog, Chain, covers, resolve_chain
from dmf.core.errors import DmfError, InputError
from dmf.core.keys import SetKind
from dmf.core.replay_state import (DONE, RESTARTING, STATE_FILE, ReplayState, continue_message,
                                   restarting_hosts)
from dmf.core.restore_checks import check_outside_node_dirs
from dmf.core.restore_request import RestoreRequest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts, utcnow
from dmf.download import Fetch, bytes_missing, check_destination, write_private
from dmf.encryption import expected
from dmf.flows import scratch_replay
from dmf.local import addresses_of, local_node_dirs
from dmf.repository import Repository
from dmf.reporting import publish_summary
from dmf.restore_plan import (COMMITLOG_DIR, NODE_LOADER, Placement, RestorePlan, download_dirs, place, plan_files,
                              plan_restore_request)
from dmf.storage import Storage
from dmf.tasks.node_restore import NodeLoadPath, NodePath
from dmf.tasks.restore import (apply_schema, create_copy, download, finish_interrupted_replay, load_table_sstableloader,
                               load_units_import, remove_downloaded, replay_commitlogs_on_host, ring_view,
                               truncate_tables, unpack_commitlogs)
from dmf.tasks.scratch_replay import remove_scratch


LOADERS_AT_ONCE = 3


class RestoreFailed(DmfError):
    pass


def explain_no_chain(catalog: Catalog, target: DbTarget, at) -> InputError:
    covering = [g for g in catalog.fulls if g.complete and covers(g.db_target, target)]
    if not covering:
        return InputError(f"no complete backup covers {target} (see `dmf backup list`)")
    return InputError(f"--time {format_ts(at)} is before the first complete snapshot of {target} "
                      f"({format_ts(covering[0].snapshot_ts)})")


def survey(cluster: CassandraCluster, request: RestoreRequest, root: Path) -> Placement:
    """Before anything is resolved or downloaded: PATH is outside the local nodes' directories, and every
    host is in the cluster block and a live node of this cluster's ring."""
    for address in request.hosts:
        cluster.host(address)
    check_outside_node_dirs(str(root), local_node_dirs(cluster))
    facts, ring, keyspaces = ring_view(cluster)
    state_file = root / STATE_FILE
    resuming = restarting_hosts(state_file.read_text() if request.replays_on_nodes and state_file.is_file() else None)
    addresses = {a: addresses_of(a) | addresses_of(cluster.host(a).address) for a in request.hosts}
    return place(request, ring, {a: f.host_id for a, f in facts.items()}, keyspaces, addresses, resuming,
                 tokens={a: f.tokens for a, f in facts.items()}, versions={f.cassandra_version for f in facts.values()})


def read_chain(repo: Repository, request: RestoreRequest, at, primary_read) -> Chain:
    """Only the history the restore can use: snapshots newest first down to the one that serves (their
    fulls' manifests only on the way, read under `primary_read`: a primary that cannot be read names
    the copies holding the restore point), then the commit-log batches since it."""
    data, chain = None, None
    with primary_read():
        for fulls in repo.newest_first(end=at, kinds={SetKind.SNAPSHOT}):
            found = resolve_chain(fulls, request.target, at)
            if found is not None:
                data = repo.snapshot_catalog(found.full.snapshot_ts)
                chain = resolve_chain(data, request.target, at)
                break
    if chain is None:
        raise explain_no_chain(repo.catalog(kinds={SetKind.SNAPSHOT}), request.target, at)
    if request.with_commitlogs:
        batches = repo.catalog(start=chain.full.time, kinds={SetKind.COMMITLOG})
        chain = resolve_chain(Catalog(data.fulls, data.increments, batches.commitlogs), request.target, at)
    return chain


def schema_cql(plan: RestorePlan) -> str:
    """The snapshot's schema.cql (--backup-schema), else the tables' own schema.cql from the snapshot."""
    if plan.schema is not None:
        return plan.schema
    pieces = [(u.directory / "schema.cql").read_text() for u in plan.files.units
              if u.set_name == "full" and (u.directory / "schema.cql").exists()]
    return "\n".join(dict.fromkeys(pieces))


def prepare_tables(cluster: CassandraCluster, plan: RestorePlan) -> str:
    """Before the load: the schema (--schema), the copy (--into), the truncate (--truncate-first). Returns
    the schema CQL used (empty if none; a scratch replay creates the tables with it)."""
    request = plan.request
    cql = schema_cql(plan) if request.reads_schema or plan.replays_in_scratch else ""
    if request.restore_schema:
        apply_schema(cluster, cql, request.target)
    if request.into is not None:
        create_copy(cluster, cql, request.target, request.into)
    if request.truncate_first and not (plan.root / STATE_FILE).is_file():
        # Dies just before: nothing changed. Just after: the tables are empty until a rerun of the same
        # command (files already verified in PATH) truncates again and loads. Cassandra's auto_snapshot
        # (on by default) keeps what was truncated in a `truncated-*` snapshot on every node.
        truncate_tables(cluster, plan.tables)
    return cql


def load_tables(cluster: CassandraCluster, plan: RestorePlan, loaded: list[str], node_path: NodePath | None) -> None:
    """One loader per table, a few at once (each is a JVM streaming to every replica); the next starts as
    soon as any ends, so one large table does not hold back the small ones after it."""
    waiting, running = list(plan.files.tables), []
    while waiting or running:
        while waiting and len(running) < LOADERS_AT_ONCE:
            running.append(load_table_sstableloader.submit(cluster, plan.request.hosts, plan.root, waiting.pop(0)))
        finished = next(as_completed(running))
        running.remove(finished)
        loaded.append(finished.result())


def import_units(cluster: CassandraCluster, plan: RestorePlan, loaded: list[str], node_path: NodePath | None) -> None:
    """Each host's own table sets by nodetool import, the hosts in parallel."""
    futures = [load_units_import.submit(cluster, address, units) for address, units in plan.import_units.items()]
    for future in futures:
        loaded.extend(future.result())


def load_on_nodes(cluster: CassandraCluster, plan: RestorePlan, loaded: list[str], node_path: NodePath) -> None:
    """Every node at once: its staged share (imported, or streamed into another topology), or (fallback)
    the worker's download of it."""
    loaded.extend(node_path.load(plan))


LOADERS = {"sstableloader": load_tables, "import": import_units, "node": load_on_nodes, NODE_LOADER: load_on_nodes}
NODE_PATHS = {"node": NodePath, NODE_LOADER: NodeLoadPath}


def load(cluster: CassandraCluster, plan: RestorePlan, node_path: NodePath | None) -> list[str]:
    """What was loaded, one line each; on a failure, RestoreFailed saying how far it got and how to resume."""
    if plan.request.replays_on_nodes and (plan.root / STATE_FILE).is_file():
        # A replay under way means this restore's load completed: resume the replay alone (a node it
        # left down could not take a stream anyway).
        get_run_logger().info("resuming the replay recorded in %s; the data was loaded by the run that began it",
                              plan.root / STATE_FILE)
        return []
    loaded: list[str] = []
    try:
        LOADERS[plan.load_mode](cluster, plan, loaded, node_path)
    except Exception as exc:
        raise RestoreFailed(
            f"load stopped after {len(loaded)} of {plan.loads} loads ({'; '.join(loaded) or 'none'}): "
            f"{exc}. Files in {plan.root} are verified; rerun the same command to resume (downloads are skipped, "
            "reloading the same SSTables is harmless)") from None
    return loaded


def stage(cluster: CassandraCluster, repository: S3Repository, plan: RestorePlan, placement: Placement
          ) -> tuple[NodePath | None, list[Fetch], scratch_replay.ScratchPlan | None]:
    """Before any byte moves: the node path's preflight (--mode node: who fetches its share), the
    scratch replay's, and the room in PATH for what the worker downloads and the replay writes. Returns
    the node path, the data files the worker downloads (all of them but on the node path) and the
    scratch plan."""
    scratch = (scratch_replay.preflight(placement.versions, plan.files, plan.request.scratch_heap)
               if plan.replays_in_scratch else None)
    path_type = NODE_PATHS.get(plan.load_mode)
    node_path = path_type.prepare(cluster, repository, plan) if path_type else None
    worker = node_path.worker_fetches if node_path else plan.files.fetches
    check_destination(plan.root,
                      bytes_missing(worker + plan.files.commitlog_fetches) + (scratch.disk if scratch else 0))
    return node_path, worker, scratch


def fetch(repository: S3Repository, plan: RestorePlan, node_path: NodePath | None, worker: list[Fetch],
          primary_read) -> dict:
    """The worker's downloads into PATH (its data files, the commit logs) and the nodes' own shares,
    verified; commit logs unpacked."""
    with primary_read():
        fetched = download(repository, plan.root, worker + plan.files.commitlog_fetches)
        if node_path:
            node_path.fetch()
    unpack_commitlogs(plan.root, plan.files.unpacks)
    return fetched


def replay_in_scratch(cluster: CassandraCluster, plan: RestorePlan, scratch: scratch_replay.ScratchPlan | None,
                      cql: str, loaded: list[str]) -> tuple[dict[str, int], dict | None]:
    """After the chain's load, before any index: the commit logs replayed in a scratch Cassandra and the
    SSTables it wrote streamed like the chain's. With keep_files the replay stays in PATH, as the
    downloads do, for another restore from them (into another table or cluster) to reuse. Returns
    mutations per source node and the report."""
    if scratch is None:
        return {}, None
    request = plan.request
    report = scratch_replay.replay_and_load(scratch, cluster, request.hosts, plan.root, cql, request.target,
                                            request.into, plan.files, plan.at)
    loaded.extend(report["loaded"])
    if not request.keep_files:
        remove_scratch(plan.root)
    return {h: n["mutations"] for h, n in report["nodes"].items()}, report


def replay_host(cluster: CassandraCluster, address: str, segments: list, plan: RestorePlan, state: ReplayState,
                save, command: str) -> None:
    """One node's replay, recorded in the state as it goes (RESTARTING, then DONE)."""
    node = state.node(address)
    if node.state == RESTARTING:
        mutations = finish_interrupted_replay(cluster, address, plan.tables, plan.at, node.log_offset)
        if mutations is None:
            state.pending(address)
        else:
            state.done(address, mutations)
        save()
    if state.node(address).state == DONE:
        get_run_logger().info("%s: replayed by an earlier run of this restore", address)
        return
    if not segments:
        get_run_logger().warning("%s: no shipped commit log for its host ID; nothing to replay", address)
        state.done(address, 0)
        save()
        return
    try:
        mutations = replay_commitlogs_on_host(cluster, address, segments, plan.tables, plan.at,
                                              lambda offset: (state.restarting(address, offset), save()))
    except Exception as exc:  # noqa: BLE001 — one line with where it stopped and how to go on
        raise RestoreFailed(continue_message(address, str(exc), state, plan.request.hosts, command)) from None
    state.done(address, mutations)
    save()


def replay(cluster: CassandraCluster, plan: RestorePlan, placement: Placement, command: str) -> dict[str, int]:
    """Rolling, one node at a time, each replaying its own segments; returns mutations per host.
    Resumable: the state in PATH (dmf.core.replay_state) tells a rerun which nodes are done."""
    if not plan.request.replays_on_nodes:
        return {}
    by_host_id: dict[str, list[Path]] = {}
    for segment in plan.files.segments:
        by_host_id.setdefault(segment.parent.name, []).append(segment)
    state_file = plan.root / STATE_FILE
    state = ReplayState.load(state_file.read_text() if state_file.exists() else None, format_ts(plan.at),
                             plan.tables, str(state_file))
    for address in plan.request.hosts:
        replay_host(cluster, address, sorted(by_host_id.get(placement.host_ids[address], [])), plan, state,
                    lambda: write_private(state_file, state.to_json()), command)
    # Every node done: a later restore into this PATH starts afresh.
    state_file.unlink()
    return {address: state.node(address).mutations for address in plan.request.hosts}


def rerun_command(request: RestoreRequest, root: Path, at, cluster_block: str, repository_block: str) -> str:
    """The CLI command that continues this restore (the same run: it resumes where it stopped)."""
    words = ["dmf", "restore", "snapshot", ",".join(request.hosts), str(root), str(request.target), "--time",
             format_ts(at), "--replay-commitlogs", "--replay-on", "nodes",
             *(["--schema"] if request.restore_schema else []),
             "--mode", request.mode, *(["--allow-host-subset"] if request.allow_host_subset else []),
             *(["--max-download-mib-s", f"{request.max_download_mib_s:g}"]
               if request.max_download_mib_s is not None else []),
             "--cluster-block", cluster_block, "--repository-block", repository_block]
    return shlex.join(words)


def clean_up(plan: RestorePlan, node_path: NodePath | None, worker: list[Fetch]) -> int:
    """Only once everything succeeded: after a failed load or replay the files stay and the rerun resumes
    from them. Dies just before: the files stay as with keep_files (a rerun reloads them, harmless). Dies
    just after, or midway: the data is loaded; a rerun downloads what is gone again. The load folders'
    links go either way: --keep-files keeps the downloads, and a rerun relinks them. The nodes' staged
    shares go by the same rule. Returns how many files went from PATH."""
    keep, files = plan.request.keep_files, plan.files
    removed = remove_downloaded(plan.root, [] if keep else [f.dest for f in worker], files.load_links,
                                download_dirs(files, plan.root))
    if node_path:
        node_path.clean_up(keep)
    return removed


def summarize(plan: RestorePlan, fetched: dict, loaded: list[str], replayed: dict[str, int], report: dict | None,
              removed: int, node_path: NodePath | None, resolve_seconds: float, download_seconds: float,
              seconds: float) -> dict:
    request, files, root = plan.request, plan.files, plan.root
    # What PATH held at most: the worker's downloads (on the node path only the fallback nodes' shares
    # and the schemas) and the commit logs.
    in_path = (*(node_path.worker_fetches if node_path else files.fetches), *files.commitlog_fetches)
    return {
        "db_target": str(request.target), "into": str(request.into) if request.into else None,
        "time": format_ts(plan.at), "snapshot_ts": format_ts(plan.chain.full.snapshot_ts),
        "increments": [format_ts(g.time) for g in plan.chain.increments], "hosts": list(request.hosts),
        "mode": request.mode, "load_mode": plan.load_mode, "files": len(files.fetches), "bytes": sum(f.size for f in files.fetches),
        "downloaded_files": fetched["downloaded"],
        "resolve_seconds": round(resolve_seconds, 2), "download_seconds": round(download_seconds, 2),
        "loaded": loaded, "seconds": round(seconds, 2),
        "commitlog_segments": len(files.segments),
        "commitlog_dir": str(root / COMMITLOG_DIR) if files.segments else None,
        "replayed_mutations": replayed, "replay": report,
        "path": str(root), "path_peak_bytes": sum(f.size for f in in_path), "kept_files": request.keep_files,
        "removed_files": removed,
        **(node_path.summary() if node_path else {}),
    }


@flow(name="restore-snapshot")
def restore_snapshot(hosts: str | list[str], path: str, db_target: str, restore_schema: bool = False,
                     time: str | int | None = None, get_commitlogs: bool = False,
                     mode: str = "node",
                     replay_commitlogs: bool = False, keep_files: bool = False, allow_host_subset: bool = False,
                     dc_map: str | None = None, replication: str | None = None, truncate_first: bool = False,
                     yes: bool = False, into: str | None = None, cluster_block: str = DEFAULT_BLOCK,
                     repository_block: str = DEFAULT_BLOCK, max_download_mib_s: float | None = None,
                     replay_on: str = "scratch", scratch_heap_mib: int | None = None) -> dict:
    """Restore DB_TARGET (keyspace or keyspace.table) into HOSTS as it was at `time` (UTC, default now).

    PATH must be absolute. The files downloaded into it are removed after a successful restore
    unless `keep_files`; commit logs fetched into PATH/cassandra_commitlogs/ always stay. A full taken
    on only some of this cluster's nodes is refused unless `allow_host_subset`. With `restore_schema`, a
    keyspace the cluster lacks is created with the backup's replication, checked against this cluster's
    datacenters first, renamed by `dc_map` (old:new,...) or replaced by `replication` (a CQL map).
    `truncate_first` empties the target's tables once the files are downloaded and verified, before
    loading: the backup's rows then replace whatever the tables hold; it needs `yes`. `into` (keyspace.table,
    in an existing keyspace) loads the table's backup into that table instead, created from the backup's
    schema if missing (new table ID, no indexes): the source table is not touched. `max_download_mib_s`
    limits the download from S3 into PATH, in total, and each node's fetch on the node path (default:
    the repository block's). `mode`: node (the default: each node fetches its own share from S3 and
    imports it; where the ring does not own the backup's tokens or HOSTS leave out a backup host, each
    of HOSTS fetches a share and streams it with sstableloader, one per table; where no node may fetch,
    the key staying on the worker, the worker path, and the run log says why), sstableloader (every
    byte through the worker, streamed from it by sstableloader) or import (downloaded to the worker,
    placed on the hosts they came from and loaded by nodetool import). `replay_on`: where
    `replay_commitlogs` replays, a scratch Cassandra on the worker (default: no node restarted,
    any target) or the nodes themselves (rolling restarts, in place only). `scratch_heap_mib`: the
    scratch Cassandra's heap (default 512 MiB; the worker must have it and ~384 MiB more free)."""
    request = RestoreRequest.parse(hosts, os.path.expanduser(path), db_target, time=time, mode=mode,
                                   restore_schema=restore_schema, get_commitlogs=get_commitlogs,
                                   replay_commitlogs=replay_commitlogs, keep_files=keep_files,
                                   allow_host_subset=allow_host_subset, dc_map=dc_map, replication=replication,
                                   truncate_first=truncate_first, yes=yes, into=into,
                                   max_download_mib_s=max_download_mib_s, replay_on=replay_on,
                                   scratch_heap_mib=scratch_heap_mib)
    logger = get_run_logger()
    started, at, root = clock.monotonic(), request.at or utcnow(), Path(request.path).resolve()
    cluster = CassandraCluster.load(cluster_block)
    repository = S3Repository.load(repository_block).with_limits(max_download_mib_s=request.max_download_mib_s)
    primary_read = partial(naming_copies, repository, repository_block, request.target, at, S3Repository.load)
    placement = survey(cluster, request, root)
    repo = Repository(Storage(repository))
    chain = read_chain(repo, request, at, primary_read)
    files = plan_files(request, root, chain, placement, expected(repository.client_key()))
    stored_schema = repo.read_schema(chain.full.snapshot_ts) if request.reads_schema else None
    plan = plan_restore_request(request, at, root, chain, placement, files, stored_schema, sse=repository.sse,
                                sse_c_key_on_nodes=repository.sse_c_key_on_nodes,
                                decrypt_on_nodes=repository.decrypt_on_nodes)
    for line in plan.warnings:
        logger.warning("%s", line)
    node_path, worker_downloads, scratch = stage(cluster, repository, plan, placement)
    for line in plan.notes:
        logger.info("%s", line)

    resolve_seconds = clock.monotonic() - started
    fetched = fetch(repository, plan, node_path, worker_downloads, primary_read)
    download_seconds = clock.monotonic() - started - resolve_seconds
    cql = prepare_tables(cluster, plan)
    loaded = load(cluster, plan, node_path)
    in_scratch, report = replay_in_scratch(cluster, plan, scratch, cql, loaded)
    if request.restore_schema:
        apply_schema(cluster, cql, request.target, after_load=True)
    command = rerun_command(request, root, at, cluster_block, repository_block)
    replayed = replay(cluster, plan, placement, command) or in_scratch

    removed = clean_up(plan, node_path, worker_downloads)
    seconds = clock.monotonic() - started
    summary = summarize(plan, fetched, loaded, replayed, report, removed, node_path, resolve_seconds,
                        download_seconds, seconds)
    logger.info("restore of %s complete: %s loaded in %.1fs; PATH needed %.1f MiB at peak, "
                "downloaded files %s", request.target, "; ".join(loaded) or "nothing", seconds,
                summary["path_peak_bytes"] / 2**20,
                "kept" if request.keep_files else "removed")
    publish_summary("restore-snapshot", summary, f"restore of {request.target} as of {format_ts(at)}: every file "
                    "verified against its manifest (size and SHA-256) before loading")
    return summary
