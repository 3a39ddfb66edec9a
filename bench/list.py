"""`backup list` cost against the number of sets: a bucket seeded with thousands of sets
(manifests and one object each), listed through the same code as `dmf backup list`.

    .venv/bin/python bench/list.py [--sets 500,1000,2000]
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bed, table  # noqa: E402

from dmf.core.keys import SetRef  # noqa: E402
from dmf.core.manifest import FileEntry, Manifest  # noqa: E402
from dmf.core.timestamps import parse_ts  # noqa: E402
from dmf.repository import Repository  # noqa: E402
from dmf.storage import Storage  # noqa: E402

HOST_ID = "4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b"


def seed(storage: Storage, count: int, start_index: int) -> None:
    """Sets of 20 files each (one stored; the listing never reads files), one full per 50 increments."""
    base = parse_ts("20200101000000")
    for i in range(start_index, count):
        full_ts = base + timedelta(days=i // 50)
        set_ts = full_ts + timedelta(minutes=1 + i % 50)
        ref = SetRef.incremental(full_ts, "10.0.0.1", set_ts) if i % 50 else SetRef.snapshot(full_ts, "10.0.0.1")
        files = tuple(FileEntry(f"ks/t-{'0' * 32}/nb-{n}-big-Data.db", 1 << 20, "ab" * 32) for n in range(20))
        storage.s3.put_object(Bucket=storage.bucket, Key=ref.file_key(files[0].path), Body=b"x")
        manifest = Manifest(set=ref, files=files, host="10.0.0.1", host_id=HOST_ID, created_at=set_ts,
                            db_target="ks.t", hosts=("10.0.0.1",))
        storage.s3.put_object(Bucket=storage.bucket, Key=ref.manifest_key, Body=manifest.to_json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default="500,1000,2000")
    args = parser.parse_args()
    _, _, repo = bed()
    bench_repo = repo.model_copy(update={"bucket": "dmf-bench-list"})
    s3 = bench_repo.client()
    if "dmf-bench-list" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="dmf-bench-list")
    storage = Storage(bench_repo)
    rows, seeded = [], 0
    for count in [int(c) for c in args.sets.split(",")]:
        seed(storage, count, seeded)
        seeded = count
        started = time.monotonic()
        catalog = Repository(storage).catalog()
        seconds = time.monotonic() - started
        sets = len(catalog.fulls) + len(catalog.increments)
        rows.append([str(sets), str(sets * 20), f"{seconds:.2f}", f"{seconds / sets * 1000:.2f}"])
    print(table(rows, ["sets", "files they hold", "list s", "ms per set"]))


if __name__ == "__main__":
    main()
