"""Backup benchmark on the test bed: raw boto3 upload of a snapshot's files vs `dmf backup snapshot`
(full) vs cassandra-medusa's `backup-node --mode full`, on the bed's S3 server (s3proxy), at two data sizes, each the median of
--repeat interleaved runs, then a dmf incremental after ~1% new data. Prints one comparison table.
Medusa is installed on first use into .cache/medusa-venv.

Two more dmf rows show what client-side encryption costs: the same full streamed through the
manager (`upload_from_nodes: false`, the path encryption takes) and with `encryption: client`; the
ratio of the two is the cipher's own cost.

    .venv/bin/dmf-testbed up && .venv/bin/python bench/backup.py [--sizes 256,1024]

Each measured phase runs in its own interpreter, so peak RSS is that phase's own.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import boto3.s3.transfer
from pydantic import SecretStr

from dmf.cql import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (KEYSPACE, ROW_BYTES, TABLE, bed, ensure_table, nodetool, parse_args,  # noqa: E402
                    peak_rss_mib, run_child, settle, table, write_rows)
from medusa_node import ensure_venv, phase_medusa  # noqa: E402

MIB = 2**20


def snapshot_files(tb, tag: str) -> list[Path]:
    data = tb.node(1).dir("data") / KEYSPACE
    return [p for p in data.glob(f"{TABLE}-*/snapshots/{tag}/*") if p.is_file()]


def phase_raw(params: dict) -> dict:
    """boto3's own managed transfer of the same files from local disk: every file submitted at once to
    one transfer manager, so its max_concurrency (dmf's) is shared across files and parts, as dmf's is."""
    tb, _, repo = bed()
    tag = f"bench-raw-{int(time.time())}"
    nodetool(tb, "snapshot", "-t", tag, "-kt", f"{KEYSPACE}.{TABLE}")
    files = snapshot_files(tb, tag)
    s3 = repo.client()
    config = boto3.s3.transfer.TransferConfig(multipart_chunksize=repo.part_size_mib * MIB,
                                              multipart_threshold=repo.part_size_mib * MIB,
                                              max_concurrency=repo.max_concurrency)
    started = time.monotonic()
    with boto3.s3.transfer.create_transfer_manager(s3, config) as manager:
        uploads = [manager.upload(str(path), repo.bucket, f"bench-raw/{tag}/{path.name}") for path in files]
        for upload in uploads:
            upload.result()
    seconds = time.monotonic() - started
    total = sum(p.stat().st_size for p in files)
    nodetool(tb, "clearsnapshot", "-t", tag)
    s3.delete_objects(Bucket=repo.bucket, Delete={"Objects": [{"Key": f"bench-raw/{tag}/{p.name}"} for p in files]})
    return {"bytes": total, "seconds": seconds, "rss": peak_rss_mib()}


def save_variant_blocks() -> None:
    """The bed's repository streamed through the manager, and that path with client-side encryption."""
    from dmf.encryption import generate_key
    _, _, repo = bed()
    repo.model_copy(update={"upload_from_nodes": False}).save("bench-manager-path", overwrite=True)
    repo.model_copy(update={"encryption": "client", "encryption_key": SecretStr(generate_key())}) \
        .save("bench-encrypted", overwrite=True)


def phase_dmf(params: dict) -> dict:
    from dmf.flows.backup_snapshot import backup_snapshot
    summary = backup_snapshot(hosts="127.0.0.1", db_target=f"{KEYSPACE}.{TABLE}", new=params["new"],
                              repository_block=params.get("block", "default"))
    return {"bytes": summary["bytes"], "seconds": summary["transfer_seconds"], "run_seconds": summary["seconds"],
            "kind": summary["kind"], "rss": peak_rss_mib()}


def live_bytes(tb) -> int:
    for line in nodetool(tb, "tablestats", f"{KEYSPACE}.{TABLE}").splitlines():
        if "Space used (live):" in line:
            return int(line.split(":")[1])
    raise RuntimeError("no live size in nodetool tablestats")


def median(runs: list[dict]) -> dict:
    """The run of median transfer time (its own RSS and sizes with it)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def main() -> None:
    args = parse_args(__doc__, {"raw": phase_raw, "dmf": phase_dmf, "medusa": phase_medusa},
                      lambda parser: (parser.add_argument("--sizes", default="256,1024",
                                                          help="data sizes in MiB (per replica)"),
                                      parser.add_argument("--repeat", type=int, default=3,
                                                          help="runs per method and size; the median is shown")))

    tb, block, _ = bed()
    save_variant_blocks()
    ensure_venv(tb)
    ensure_table(block)
    with connect(block, timeout=120) as session:  # each run measures the sizes it asks for, from empty
        session.execute(f"TRUNCATE {KEYSPACE}.{TABLE}")
    nodetool(tb, "clearsnapshot", "--all", KEYSPACE)
    nodetool(tb, "disableautocompaction", KEYSPACE, TABLE)
    rows_written, results = 0, []
    for size in [int(s) for s in args.sizes.split(",")]:
        target_rows = size * MIB // ROW_BYTES
        write_rows(block, rows_written, target_rows - rows_written)
        rows_written = target_rows
        methods = {"raw": ("raw", {}), "dmf": ("dmf", {"new": True}),
                   "manager": ("dmf", {"new": True, "block": "bench-manager-path"}),
                   "encrypted": ("dmf", {"new": True, "block": "bench-encrypted"}), "medusa": ("medusa", {})}
        runs: dict[str, list[dict]] = {name: [] for name in methods}
        for _ in range(args.repeat):  # rounds interleave the methods, so a slow spell hits them alike
            for name, (phase, params) in methods.items():
                settle(tb)
                runs[name].append(run_child(phase, **params))
        results.append((size, *(median(runs[m]) for m in ("raw", "dmf", "medusa", "manager", "encrypted"))))
    before = live_bytes(tb)
    write_rows(block, rows_written, max(1, rows_written // 100))
    settle(tb)
    delta = live_bytes(tb) - before
    incremental = run_child("dmf", new=False)

    rows, ratios = [], []
    for size, raw, full, medusa, manager, encrypted in results:
        raw_rate, dmf_rate = raw["bytes"] / MIB / raw["seconds"], full["bytes"] / MIB / full["seconds"]
        rows.append([f"{size} MiB", "raw boto3 (one transfer manager, all files)", f"{raw['bytes'] / MIB:.0f}",
                     f"{raw['seconds']:.1f}", "", "", f"{raw_rate:.1f}", "1.00", f"{raw['rss']:.0f}"])
        rows.append([f"{size} MiB", "dmf backup snapshot (full)", f"{full['bytes'] / MIB:.0f}",
                     f"{full['seconds']:.1f}", f"{full['run_seconds']:.1f}",
                     f"{full['run_seconds'] - full['seconds']:.1f}", f"{dmf_rate:.1f}",
                     f"{dmf_rate / raw_rate:.2f}", f"{full['rss']:.0f}"])
        medusa_rate = medusa["bytes"] / MIB / medusa["seconds"]
        rows.append([f"{size} MiB", "medusa backup-node (full, bench.data)", f"{medusa['bytes'] / MIB:.0f}",
                     f"{medusa['seconds']:.1f}", f"{medusa['run_seconds']:.1f}",
                     f"{medusa['run_seconds'] - medusa['seconds']:.1f}", f"{medusa_rate:.1f}",
                     f"{medusa_rate / raw_rate:.2f}", f"{medusa['rss']:.0f}"])
        for label, run in (("dmf backup snapshot (full, manager path)", manager),
                           ("dmf backup snapshot (full, encryption: client)", encrypted)):
            rate = run["bytes"] / MIB / run["seconds"]
            rows.append([f"{size} MiB", label, f"{run['bytes'] / MIB:.0f}", f"{run['seconds']:.1f}",
                         f"{run['run_seconds']:.1f}", f"{run['run_seconds'] - run['seconds']:.1f}", f"{rate:.1f}",
                         f"{rate / raw_rate:.2f}", f"{run['rss']:.0f}"])
        ratios.append(f"{size} MiB: dmf full / medusa full throughput: {dmf_rate / medusa_rate:.2f}×")
        manager_rate, encrypted_rate = (r["bytes"] / MIB / r["seconds"] for r in (manager, encrypted))
        ratios.append(f"{size} MiB: encryption: client / manager path throughput: {encrypted_rate / manager_rate:.2f}×"
                      f" (and / node agent: {encrypted_rate / dmf_rate:.2f}×)")
    rows.append([f"+{delta / MIB:.1f} MiB", f"dmf backup snapshot ({incremental['kind']})",
                 f"{incremental['bytes'] / MIB:.1f}", f"{incremental['seconds']:.1f}",
                 f"{incremental['run_seconds']:.1f}", f"{incremental['run_seconds'] - incremental['seconds']:.1f}",
                 f"{incremental['bytes'] / MIB / incremental['seconds']:.1f}",
                 f"bytes/delta {incremental['bytes'] / delta:.2f}", f"{incremental['rss']:.0f}"])
    print(table(rows, ["data", "method", "MiB", "transfer s", "whole run s", "fixed s", "MiB/s", "ratio",
                       "peak RSS MiB"]))
    print("\n".join(ratios))
    nodetool(tb, "enableautocompaction", KEYSPACE, TABLE)


if __name__ == "__main__":
    main()
