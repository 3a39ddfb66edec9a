"""What decrypting on the nodes costs and gains (`decrypt_on_nodes`, #24 item 5), on the test bed, in one
run: bench/restore.py's table spread over the three nodes (bench_spread.data, RF 1), backed up
three times, to three buckets of its own: plaintext, and with `encryption: client` (the backup streams
through the worker, which holds the key). Then, the table truncated before each, one restore each:

- plaintext, `--mode node`: each node fetches its own share (the reference);
- encrypted, `decrypt_on_nodes: true`: the node path, each node's agent decrypting as it streams;
- encrypted, `decrypt_on_nodes: false` (the default): the worker path, every byte downloaded and
  decrypted on the worker, then placed on its node and imported.

For each: whole restore time, download time, bytes through the worker, the node agent's peak RSS.

    .venv/bin/python bench/restore_decrypt.py [--size 1024]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROW_BYTES, bed, parse_args, run_child, table, wait_idle, write_rows  # noqa: E402
from restore import (HOSTS, KEYSPACE, MIB, TABLE, TARGET, check_rows, create_table, drop_keyspace,  # noqa: E402
                     empty_table, phase_dmf)

from dmf.testbed import prefect_server  # noqa: E402

BLOCKS = {"plain": "bench-decrypt-plain", "nodes": "bench-decrypt-nodes", "worker": "bench-decrypt-worker"}
BUCKETS = {"plain": "dmf-bench-decrypt-plain", "encrypted": "dmf-bench-decrypt-encrypted"}


def save_blocks() -> None:
    """Two buckets emptied, and the three blocks over them (the encrypted two share a key and a bucket)."""
    from dmf.encryption import generate_key
    _, _, repo = bed()
    s3 = repo.client()
    for bucket in BUCKETS.values():
        if bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for o in page.get("Contents", []):
                    s3.delete_object(Bucket=bucket, Key=o["Key"])
        else:
            s3.create_bucket(Bucket=bucket)
    repo.model_copy(update={"bucket": BUCKETS["plain"]}).save(BLOCKS["plain"], overwrite=True)
    encrypted = repo.model_copy(update={"bucket": BUCKETS["encrypted"], "encryption": "client",
                                        "encryption_key": SecretStr(generate_key())})
    encrypted.model_copy(update={"decrypt_on_nodes": True}).save(BLOCKS["nodes"], overwrite=True)
    encrypted.save(BLOCKS["worker"], overwrite=True)


def phase_backup(params: dict) -> dict:
    from dmf.flows.backup_snapshot import backup_snapshot
    summary = backup_snapshot(hosts=HOSTS, db_target=TARGET, new=True, repository_block=params["block"])
    return {"bytes": summary["bytes"], "seconds": summary["seconds"]}


def main() -> None:
    args = parse_args(__doc__, {"backup": phase_backup, "restore": phase_dmf},
                      lambda parser: parser.add_argument("--size", type=int, default=1024,
                                                         help="table size in MiB (over the three nodes)"))
    tb, block, _ = bed()
    os.environ.setdefault("PREFECT_API_URL", prefect_server.api_url(tb))
    save_blocks()
    drop_keyspace(tb, block)
    create_table(block)
    rows = args.size * MIB // ROW_BYTES
    try:
        write_rows(block, 0, rows, TABLE, KEYSPACE)
        backups = {name: run_child("backup", block=BLOCKS[name]) for name in ("plain", "nodes")}
        wait_idle()
        results = {}
        for name, label in (("plain", "plaintext, --mode node"),
                            ("nodes", "encryption: client, decrypt_on_nodes: true"),
                            ("worker", "encryption: client, decrypt_on_nodes: false (default)")):
            empty_table(tb, block)
            results[label] = run_child("restore", block=BLOCKS[name])
            check_rows(block, rows)
    finally:
        drop_keyspace(tb, block)
    reference = results["plaintext, --mode node"]["seconds"]
    print(table([[label, r["load_mode"], f"{r['bytes'] / MIB:.0f}", f"{r['download_seconds']:.1f}",
                  f"{r['seconds']:.1f}", f"{r['seconds'] / reference:.2f}", f"{r['worker_bytes'] / MIB:.1f}",
                  "" if r["node_rss"] is None else f"{r['node_rss']:.0f}"] for label, r in results.items()],
                ["restore", "load", "MiB", "download s", "whole restore s", "× plaintext", "MiB via worker",
                 "node agent peak RSS MiB"]))
    fallbacks = [f"{label} fell back: {r['fallbacks']}" for label, r in results.items() if r["fallbacks"]]
    print("; ".join([f"backups: plaintext {backups['plain']['bytes'] / MIB:.0f} MiB in "
                     f"{backups['plain']['seconds']:.0f} s, encrypted {backups['nodes']['bytes'] / MIB:.0f} MiB in "
                     f"{backups['nodes']['seconds']:.0f} s", *fallbacks]))


if __name__ == "__main__":
    main()
