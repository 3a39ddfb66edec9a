"""Restore benchmark on the test bed, for a table spread over the three nodes (bench_spread.data,
replication factor 1: each node holds, backs up and restores its own third, so the table's bytes are
moved once, whichever method; RF 3 would move every byte three times on one machine and say nothing
more about the node path). Per size, one run each:

- raw boto3 download of the latest dmf full's objects (all three hosts' sets, on the worker, dmf's
  concurrency in files, each file's ranged GETs of dmf's part size in sequence);
- `dmf restore snapshot` with `--mode node` (each node fetches its own share from S3 and imports it:
  no restored byte through the worker), `--mode import` and `--mode sstableloader` (the worker path);
- cassandra-medusa 0.31's `restore-node --use-sstableloader` on the three nodes at once, each of its
  own node's backup (what `restore-cluster` runs on each node over SSH).

For each: whole restore time (the table truncated before, so each loads into an empty table), bytes
through the worker, the worker's peak RSS (its python, and the largest process it started: the
loader's JVM) and one node-side process's peak RSS (dmf's fetch agent, medusa). After each load a
sample of rows is read back. The keyspace skips the commit log (durable_writes false) and the table
autocompaction, so seeding costs the bed little and no compaction runs under a measurement; the
keyspace is dropped at the end.

    .venv/bin/python bench/restore.py [--sizes 1024,4096]
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3.s3.transfer

from dmf.cql import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROW_BYTES, bed, parse_args, peak_rss_mib, run_child, table, wait_idle,  # noqa: E402
                    write_rows)
from medusa_node import (backup_nodes_with_medusa, ensure_venv, phase_medusa_restore,  # noqa: E402
                         remove_medusa_objects)

MIB = 2**20
KEYSPACE, TABLE = "bench_spread", "data"
TARGET = f"{KEYSPACE}.{TABLE}"
HOSTS = "127.0.0.1,127.0.0.2,127.0.0.3"
SAMPLE = 32


def drop_keyspace(tb, block) -> None:
    """The keyspace and, on disk, what auto_snapshot kept of it (the drop's and truncates' snapshots)."""
    with connect(block, timeout=120) as session:
        session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    for node in tb.nodes(3):
        shutil.rmtree(node.dir("data") / KEYSPACE, ignore_errors=True)


def create_table(block) -> None:
    with connect(block, timeout=120) as session:
        session.execute(f"CREATE KEYSPACE {KEYSPACE} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = false")
        session.execute(f"CREATE TABLE {TARGET} (id int PRIMARY KEY, payload blob) WITH compression = "
                        "{'enabled': 'false'} AND compaction = {'class': 'SizeTieredCompactionStrategy', "
                        "'enabled': 'false'}")


def empty_table(tb, block) -> None:
    """Before each restore: the table empty, the truncate's auto_snapshot removed (hard links to
    the previous restore's files), the machine quiet."""
    with connect(block, timeout=120) as session:
        session.execute(f"TRUNCATE {TARGET}")
    for node in tb.nodes(3):
        for folder in (node.dir("data") / KEYSPACE).glob("*/snapshots/truncated-*"):
            shutil.rmtree(folder, ignore_errors=True)
    wait_idle()


def check_rows(block, rows: int) -> None:
    """A sample of the rows, read back after a restore: the load reached the table."""
    ids = random.sample(range(rows), SAMPLE)
    with connect(block, timeout=120) as session:
        found = {r.id for r in session.execute(f"SELECT id FROM {TARGET} WHERE id IN ({','.join(map(str, ids))})")}
    if found != set(ids):
        sys.exit(f"restore incomplete: {len(set(ids) - found)} of {SAMPLE} sampled rows missing")


def latest_chain():
    from dmf.core.catalog import resolve_chain
    from dmf.core.targets import DbTarget
    from dmf.core.timestamps import utcnow
    from dmf.repository import DATA_KINDS, Repository
    from dmf.storage import Storage
    _, _, repo = bed()
    return resolve_chain(Repository(Storage(repo)).catalog(kinds=DATA_KINDS), DbTarget.parse(TARGET), utcnow())


def phase_backup(params: dict) -> dict:
    from dmf.flows.backup_snapshot import backup_snapshot
    summary = backup_snapshot(hosts=HOSTS, db_target=TARGET, new=True)
    return {"bytes": summary["bytes"], "seconds": summary["seconds"]}


def phase_medusa_backup(params: dict) -> dict:
    started = time.monotonic()
    return {"name": backup_nodes_with_medusa(TARGET), "seconds": time.monotonic() - started}


def phase_raw(params: dict) -> dict:
    _, _, repo = bed()
    chain = latest_chain()
    keys = [(m.set.file_key(f.path), f.size) for m in chain.manifests for f in m.files]
    s3 = repo.client()
    # max_concurrency files at a time, each one's ranged GETs in sequence: one transfer manager given
    # every file at once deadlocks in s3transfer 0.19 (the threads that finished a file's first chunk
    # wait for a slot to schedule its other chunks, and hold every slot).
    config = boto3.s3.transfer.TransferConfig(multipart_chunksize=repo.part_size_mib * MIB,
                                              multipart_threshold=repo.part_size_mib * MIB, use_threads=False)
    target = Path(tempfile.mkdtemp(prefix="bench-raw-"))
    started = time.monotonic()
    with ThreadPoolExecutor(repo.max_concurrency) as pool:
        list(pool.map(lambda item: s3.download_file(repo.bucket, item[1][0], str(target / f"{item[0]}"), Config=config),
                      enumerate(keys)))
    seconds = time.monotonic() - started
    shutil.rmtree(target)
    return {"bytes": sum(size for _, size in keys), "files": len(keys), "seconds": seconds,
            "download_seconds": seconds, "worker_bytes": sum(size for _, size in keys), "rss": peak_rss_mib()}


def phase_dmf(params: dict) -> dict:
    import resource

    from dmf.flows.restore_snapshot import restore_snapshot
    target = Path(tempfile.mkdtemp(prefix="bench-dmf-"))
    started = time.monotonic()
    try:
        summary = restore_snapshot(hosts=HOSTS, path=str(target), db_target=TARGET, mode=params.get("mode", "node"),
                                   repository_block=params.get("block", "default"))
    finally:
        shutil.rmtree(target)
    nodes = summary.get("nodes", {})
    return {"bytes": summary["bytes"], "files": summary["files"], "seconds": time.monotonic() - started,
            "flow_seconds": summary["seconds"], "resolve_seconds": summary["resolve_seconds"],
            "download_seconds": summary["download_seconds"], "rss": peak_rss_mib(),
            "child_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "worker_bytes": summary.get("worker_bytes", summary["bytes"]),
            "fallbacks": summary.get("fallbacks", {}), "load_mode": summary["load_mode"],
            "node_bytes": {a: n["fetched_bytes"] for a, n in nodes.items()},
            "node_rss": max((n["agent_rss_kib"] / 1024 for n in nodes.values()), default=None)}


def mib(value) -> str:
    return "" if value is None else f"{value / MIB:.0f}"


def measure(tb, block, size: int, rows_written: int) -> tuple[list[list[str]], list[str], int]:
    rows = size * MIB // ROW_BYTES
    started = time.monotonic()
    write_rows(block, rows_written, rows - rows_written, TABLE, KEYSPACE)  # the backups' snapshots flush it
    seeded = time.monotonic() - started
    backup = run_child("backup")
    medusa_backup = run_child("medusa_backup")
    wait_idle()
    results = {"raw": run_child("raw")}
    for name, phase, params in (("node", "dmf", {"mode": "node"}), ("import", "dmf", {"mode": "import"}),
                                ("sstableloader", "dmf", {"mode": "sstableloader"}),
                                ("medusa", "medusa", {"name": medusa_backup["name"], "table": TARGET})):
        empty_table(tb, block)
        results[name] = run_child(phase, **params)
        check_rows(block, rows)
    remove_medusa_objects(bed()[2])

    medusa = results["medusa"]["seconds"]
    labels = {"raw": "raw boto3 download (worker, files in parallel)", "node": "dmf restore --mode node",
              "import": "dmf restore --mode import", "sstableloader": "dmf restore --mode sstableloader",
              "medusa": "medusa restore-node --use-sstableloader x3 nodes"}
    table_rows = []
    for name, r in results.items():
        loads = name != "raw"
        table_rows.append([f"{size} MiB", labels[name], mib(r["bytes"]), f"{r['download_seconds']:.1f}",
                           f"{r['seconds']:.1f}" if loads else "", f"{medusa / r['seconds']:.2f}" if loads else "",
                           f"{r.get('worker_bytes', 0) / MIB:.1f}",
                           "" if "rss" not in r else f"{r['rss']:.0f}" + (f" / {r['child_rss']:.0f}"
                                                                          if "child_rss" in r else ""),
                           "" if r.get("node_rss") is None else f"{r['node_rss']:.0f}"])
    node = results["node"]
    notes = [f"{size} MiB: seeded in {seeded:.0f} s; dmf full of 3 hosts {backup['bytes'] / MIB:.0f} MiB in "
             f"{backup['seconds']:.0f} s; medusa backup-node x3 in {medusa_backup['seconds']:.0f} s; "
             f"{results['raw']['files']} objects"]
    for name in ("node", "import", "sstableloader"):
        r = results[name]
        notes.append(f"{size} MiB --mode {name}: resolve+preflight {r['resolve_seconds']:.1f} s, download "
                     f"{r['download_seconds']:.1f} s, load+clean-up "
                     f"{r['flow_seconds'] - r['resolve_seconds'] - r['download_seconds']:.1f} s, flow run start "
                     f"{r['seconds'] - r['flow_seconds']:.1f} s" + (f"; fell back: {r['fallbacks']}"
                                                                    if r["fallbacks"] else ""))
    notes.append(f"{size} MiB --mode node per node: " + ", ".join(
        f"{a} {b / MIB:.0f} MiB at {b / MIB / node['download_seconds']:.1f} MiB/s"
        for a, b in sorted(node["node_bytes"].items())))
    return table_rows, notes, rows


def main() -> None:
    args = parse_args(__doc__, {"backup": phase_backup, "medusa_backup": phase_medusa_backup, "raw": phase_raw,
                                "dmf": phase_dmf, "medusa": phase_medusa_restore},
                      lambda parser: parser.add_argument("--sizes", default="1024",
                                                         help="table sizes in MiB (over the three nodes)"))
    tb, block, _ = bed()
    from dmf.testbed import prefect_server
    os.environ.setdefault("PREFECT_API_URL", prefect_server.api_url(tb))  # the bed's, whatever the profile says
    ensure_venv(tb)
    drop_keyspace(tb, block)
    create_table(block)
    rows_written, table_rows, notes = 0, [], []
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            more_rows, more_notes, rows_written = measure(tb, block, size, rows_written)
            table_rows += more_rows
            notes += more_notes
    finally:
        drop_keyspace(tb, block)
    print(table(table_rows, ["data", "method", "MiB", "download s", "whole restore s", "Medusa / this",
                             "MiB via worker", "worker peak RSS MiB (python / largest child)",
                             "node process peak RSS MiB"]))
    print("\n".join(notes))


if __name__ == "__main__":
    main()
