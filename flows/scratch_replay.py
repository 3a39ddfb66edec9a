"""The restore flow's branch for --replay-commitlogs in a scratch Cassandra (the default): preflight
before anything is downloaded, then, after the snapshot chain's load, the replay (or the one an
earlier run of the restore completed in PATH for the same inputs) and the load of what it wrote (so
the replayed cells, newer, win over the snapshot's where timestamps say so)."""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger

from dmf import cassandra_jvm
from dmf.core.errors import InputError
from dmf.core.scratch import check_memory, check_version, disk_needed
from dmf.core.targets import DbTarget
from dmf.scratch_cassandra import available_memory, cache_dir, require_java
from dmf.tasks.restore import load_table_sstableloader
from dmf.tasks.scratch_replay import replay_in_scratch


@dataclass(frozen=True)
class ScratchPlan:
    version: str
    disk: int
    heap_mib: int


def segment_files(plan) -> dict[Path, tuple[int, str]]:
    """Each segment the replay reads, as Cassandra wrote it (unpacked, decrypted): its size and
    SHA-256 from the manifest, which the download and the unpack checked."""
    placed = {f.dest: (f.placed.size, f.placed.sha256) for f in plan.commitlog_fetches}
    unpacked = {u.dest: (u.size, u.sha256) for u in plan.unpacks}
    return {segment: unpacked[segment] if segment in unpacked else placed[segment] for segment in plan.segments}


def preflight(versions: Iterable[str], plan, heap_mib: int) -> ScratchPlan:
    """Java, the worker's memory, the nodes' one Cassandra version and its jars (fetched once into the
    cache), and the disk the replay takes in PATH: each refused with one line before any download."""
    require_java()
    check_memory(available_memory(), heap_mib)
    version = check_version(set(versions))
    try:
        cassandra_jvm.ensure_jars(cache_dir(), version)
    except cassandra_jvm.JarsError as exc:
        raise InputError(f"the scratch replay needs Cassandra {version}'s jars: {exc}") from None
    sizes: dict[str, int] = {}
    for segment, (size, _) in segment_files(plan).items():
        sizes[segment.parent.name] = sizes.get(segment.parent.name, 0) + size
    return ScratchPlan(version, disk_needed(sizes), heap_mib)


def replay_and_load(scratch: ScratchPlan, cluster, host_list: tuple[str, ...], root: Path, cql: str,
                    target: DbTarget, copy_to: DbTarget | None, plan, at) -> dict:
    """Returns the report (per source node: segments, mutations, seconds; whether the replay was an
    earlier run's, reused) with the loads made."""
    started = time.monotonic()
    if not plan.segments:
        get_run_logger().warning("no commit log shipped up to %s since the snapshot: nothing to replay", at)
        return {"on": "scratch", "cassandra_version": scratch.version, "nodes": {}, "reused_from": None,
                "loaded": [], "replay_seconds": 0.0, "load_seconds": 0.0}
    if copy_to is not None:
        targets = {str(target): str(copy_to)}
    else:
        targets = {t: t for t in sorted({f"{u.keyspace}.{u.table}" for u in plan.units})}
    files = {str(path): identity for path, identity in segment_files(plan).items()}
    nodes, loads, reused_from = replay_in_scratch(cluster, root, scratch.version, cql, targets, files, at,
                                                  scratch.heap_mib)
    replayed_at = time.monotonic()
    for load in loads:
        load_table_sstableloader(cluster, host_list, root, load)
    loaded = [f"{load.keyspace}.{load.table} (replayed from {load.sets} node(s))" for load in loads]
    return {"on": "scratch", "cassandra_version": scratch.version, "nodes": nodes, "reused_from": reused_from,
            "loaded": loaded,
            "replay_seconds": round(replayed_at - started, 1),
            "load_seconds": round(time.monotonic() - replayed_at, 1)}
