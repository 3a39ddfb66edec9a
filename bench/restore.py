"""Restore benchmark on the test bed: raw boto3 download of the objects of the latest full
backup of bench.data (every object submitted at once to one boto3 transfer manager) vs the
restore's download phase (after the chain is resolved, before loading; every file verified), and
the whole restore time with sstableloader, with `--mode import` (file placement + nodetool import) and
with `--mode node` (each node fetches its own files from S3 and imports them: no restored byte
through the worker), with the bytes that passed through the worker and the node agent's peak RSS, against cassandra-medusa's `restore-node --use-sstableloader` of the same data (its own backup of it).

    .venv/bin/python bench/backup.py   # first: it creates the backups
    .venv/bin/python bench/restore.py
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import boto3.s3.transfer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KEYSPACE, TABLE, bed, parse_args, peak_rss_mib, run_child, table  # noqa: E402
from medusa_node import ensure_venv, phase_medusa_restore  # noqa: E402

MIB = 2**20


def latest_chain():
    from dmf.core.catalog import resolve_chain
    from dmf.core.targets import DbTarget
    from dmf.core.timestamps import utcnow
    from dmf.repository import DATA_KINDS, Repository
    from dmf.storage import Storage
    _, _, repo = bed()
    chain = resolve_chain(Repository(Storage(repo)).catalog(kinds=DATA_KINDS), DbTarget.parse(f"{KEYSPACE}.{TABLE}"),
                          utcnow())
    if chain is None:
        sys.exit("no backup of bench.data: run bench/backup.py first")
    return chain


def phase_raw(params: dict) -> dict:
    _, _, repo = bed()
    chain = latest_chain()
    keys = [(m.set.file_key(f.path), f.size) for m in chain.manifests for f in m.files]
    s3 = repo.client()
    config = boto3.s3.transfer.TransferConfig(multipart_chunksize=repo.part_size_mib * MIB,
                                              multipart_threshold=repo.part_size_mib * MIB,
                                              max_concurrency=repo.max_concurrency)
    target = Path(tempfile.mkdtemp(prefix="bench-raw-"))
    started = time.monotonic()
    # Every object submitted at once to one transfer manager: boto3's own parallel transfer of the whole
    # set, its concurrency (dmf's) shared across files and parts, as dmf's is.
    with boto3.s3.transfer.create_transfer_manager(s3, config) as manager:
        downloads = [manager.download(repo.bucket, key, str(target / f"{i}")) for i, (key, _) in enumerate(keys)]
        for download in downloads:
            download.result()
    seconds = time.monotonic() - started
    shutil.rmtree(target)
    return {"bytes": sum(size for _, size in keys), "seconds": seconds, "rss": peak_rss_mib()}


def phase_dmf(params: dict) -> dict:
    from dmf.flows.restore_snapshot import restore_snapshot
    target = Path(tempfile.mkdtemp(prefix="bench-dmf-"))
    try:
        # bench/backup.py backs up one node; with RF 3 on three nodes it holds every row.
        summary = restore_snapshot(hosts="127.0.0.1,127.0.0.2,127.0.0.3", path=str(target),
                                   db_target=f"{KEYSPACE}.{TABLE}", allow_host_subset=True, mode=params["mode"])
    finally:
        shutil.rmtree(target)
    nodes = summary.get("nodes", {}).values()
    return {"bytes": summary["bytes"], "download_seconds": summary["download_seconds"],
            "seconds": summary["seconds"], "rss": peak_rss_mib(),
            "worker_bytes": summary.get("worker_bytes", summary["bytes"]),
            "agent_rss": max((n["agent_rss_kib"] / 1024 for n in nodes), default=None)}


def main() -> None:
    parse_args(__doc__, {"raw": phase_raw, "dmf": phase_dmf, "medusa": phase_medusa_restore})
    ensure_venv(bed()[0])
    # Medusa first: it backs up node 1's live SSTables, which each load below adds to (autocompaction is
    # off on bench.data), while dmf restores its own backup of a fixed size.
    medusa = run_child("medusa")
    raw = run_child("raw")
    raw_rate = raw["bytes"] / MIB / raw["seconds"]
    rows = [["raw boto3 (one transfer manager, all objects)", f"{raw['bytes'] / MIB:.0f}", f"{raw['seconds']:.1f}",
             f"{raw_rate:.1f}", "1.00", "", f"{raw['bytes'] / MIB:.0f}", f"{raw['rss']:.0f}", ""]]
    whole = {}
    for mode in ("sstableloader", "import", "node"):
        dmf = run_child("dmf", mode=mode)
        whole[mode] = dmf["seconds"]
        dmf_rate = dmf["bytes"] / MIB / dmf["download_seconds"]
        rows.append([f"dmf restore --mode {mode}: download+verify phase", f"{dmf['bytes'] / MIB:.0f}",
                     f"{dmf['download_seconds']:.1f}", f"{dmf_rate:.1f}", f"{dmf_rate / raw_rate:.2f}",
                     f"{dmf['seconds']:.1f}", f"{dmf['worker_bytes'] / MIB:.1f}", f"{dmf['rss']:.0f}",
                     "" if dmf["agent_rss"] is None else f"{dmf['agent_rss']:.0f}"])
    medusa_rate = medusa["bytes"] / MIB / medusa["download_seconds"]
    rows.append(["medusa restore-node --use-sstableloader: download", f"{medusa['bytes'] / MIB:.0f}",
                 f"{medusa['download_seconds']:.1f}", f"{medusa_rate:.1f}", f"{medusa_rate / raw_rate:.2f}",
                 f"{medusa['seconds']:.1f}", f"{medusa['bytes'] / MIB:.0f}", f"{medusa['rss']:.0f}", ""])
    print(table(rows, ["method", "MiB", "s", "MiB/s", "ratio", "whole restore s", "MiB via worker",
                       "peak RSS MiB", "agent RSS MiB"]))
    print(f"whole restore, medusa / dmf (sstableloader): {medusa['seconds'] / whole['sstableloader']:.2f}x "
          f"(--mode import: {medusa['seconds'] / whole['import']:.2f}x, --mode node: "
          f"{medusa['seconds'] / whole['node']:.2f}x)")


if __name__ == "__main__":
    main()
