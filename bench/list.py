"""`backup list` cost against the number of sets: a bucket seeded with the history of a three-node
cluster (a full per host every week, an increment per host every 15 minutes; each set a manifest
listing 20 files and one stored object), listed through the same code as `dmf backup list`:
the old way (every manifest read), then through the catalog index: first with no index and no
closed chain summary (both rebuilt), then warm (every chain but the newest closed).

    .venv/bin/python bench/list.py [--sets 2000,10000,35000] [--old-up-to 5000] [--moto]

Each count has a bucket of its own (dmf-bench-list-<count>), seeded once: a marker object written
after seeding lets later runs reuse it (wiping 35,000 sets on s3proxy means listing 70,000 keys
without a delimiter, which its filesystem store takes minutes to do). Against the test bed's S3 by
default; --moto runs an in-process moto server instead (seeded through moto's backend: its HTTP
front end takes ~10 ms per PUT).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

from dmf.core.keys import CATALOG_NAME, CLOSED_NAME, SetRef  # noqa: E402
from dmf.core.manifest import FileEntry, Manifest  # noqa: E402
from dmf.core.timestamps import parse_ts  # noqa: E402
from dmf.repository import Repository  # noqa: E402
from dmf.storage import Storage  # noqa: E402

BUCKET = "dmf-bench-list"
SEEDED = "bench-seeded"  # top-level marker outside the layout: the listing ignores it
HOSTS = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
HOST_IDS = {h: f"4a1a7505-0842-4a5c-a7fc-0baf0bb43b1{i}" for i, h in enumerate(HOSTS)}
SLOTS_PER_WEEK = 7 * 24 * 4  # 15-minute slots: the first takes the full, the others an increment


def set_number(i: int, chain_slots: int = SLOTS_PER_WEEK, shift: int = 0) -> tuple[SetRef, str]:
    """The i-th set of the history, in time order: host i % 3 at 15-minute slot i // 3. A full starts
    each chain of `chain_slots` slots (a week's by default), the chains shifted back by `shift` slots
    (so that the newest chain can be a whole one, however many sets there are)."""
    host, slot = HOSTS[i % len(HOSTS)], i // len(HOSTS)
    chain, in_chain = divmod(slot + shift, chain_slots)
    start = parse_ts("20250106000000") + timedelta(minutes=15 * (chain * chain_slots - shift))
    if in_chain == 0:
        return SetRef.snapshot(start, host), host
    return SetRef.incremental(start, host, start + timedelta(minutes=15 * in_chain)), host


def objects_of(i: int, **chains) -> list[tuple[str, bytes]]:
    ref, host = set_number(i, **chains)
    files = tuple(FileEntry(f"ks/t-{'0' * 32}/nb-{n}-big-Data.db", 1 << 20, "ab" * 32) for n in range(20))
    manifest = Manifest(set=ref, files=files, host=host, host_id=HOST_IDS[host], created_at=ref.time,
                        db_target="ks.t", hosts=HOSTS)
    return [(ref.file_key(files[0].path), b"x"), (ref.manifest_key, manifest.to_json())]


def http_put(storage: Storage):
    return lambda key, body: storage.s3.put_object(Bucket=storage.bucket, Key=key, Body=body)


def seed(put, first: int, count: int, **chains) -> None:
    """Sets [first, count), each data object before its manifest, on parallel threads (`chains`: set_number's)."""
    def one(i: int) -> None:
        for key, body in objects_of(i, **chains):
            put(key, body)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(first, count)))


def drop_indexes(storage: Storage) -> None:
    storage.delete_keys([f"{prefix}{name}" for prefix in storage.list_prefixes("")
                         for name in (CATALOG_NAME, CLOSED_NAME)])


def timed(call) -> tuple[float, object]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


def moto_repository():
    """An in-process moto server, its repository block, and a PUT straight into moto's backend."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters
    from pydantic import SecretStr

    from dmf.blocks import S3Repository

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    repo = S3Repository(bucket=BUCKET, credentials=AwsCredentials(
        aws_access_key_id="moto", aws_secret_access_key=SecretStr("moto"), region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=f"http://{host}:{port}")))
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    return repo, lambda bucket: lambda key, body: backend.put_object(bucket, key, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="2000,10000,35000")
    parser.add_argument("--old-up-to", type=int, default=5000,
                        help="read every manifest (the old way) only up to this many sets")
    parser.add_argument("--moto", action="store_true", help="an in-process moto server instead of the test bed")
    args = parser.parse_args()
    if args.moto:
        repo, backend_put = moto_repository()
    else:
        from common import bed
        _, _, repo = bed()
        backend_put = None
    s3 = repo.client()

    def bucket(name: str) -> Storage:
        if name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=name)
        return Storage(repo.model_copy(update={"bucket": name}))
    empty_s, _ = timed(lambda: Repository(bucket(f"{BUCKET}-empty")).listing_catalog())
    rows = []
    for count in [int(c) for c in args.sets.split(",")]:
        storage = bucket(f"{BUCKET}-{count}")
        seed_s = 0.0
        if storage.get_bytes(SEEDED, missing_ok=True) != str(count).encode():
            seed_s, _ = timed(lambda: seed(backend_put(storage.bucket) if backend_put else http_put(storage), 0, count))
            storage.put_bytes(SEEDED, str(count).encode())
        if count <= args.old_up_to:
            old_s, catalog = timed(lambda: Repository(storage).listing_catalog(use_index=False))
        else:
            old_s, catalog = None, None
        drop_indexes(storage)
        first_s, first = timed(lambda: Repository(storage).listing_catalog())
        warm_runs = [timed(lambda: Repository(storage).listing_catalog()) for _ in range(3)]
        warm_s, warm = sorted(warm_runs, key=lambda run: run[0])[1]  # the median of three
        assert warm == first and (catalog is None or catalog == warm), "the index lists other sets than the manifests"
        sets = sum(len(g.sets) for g in warm.all_groups())
        assert sets == count
        cost = lambda s: f"{s:.2f} ({s / sets * 1000:.3f})"  # noqa: E731
        rows.append([str(sets), str(len(warm.fulls) + len(warm.increments)), str(len(warm.fulls)),
                     cost(old_s) if old_s is not None else "skipped", cost(first_s), cost(warm_s),
                     cost(max(warm_s - empty_s, 0))])
        print(f"{count} sets: seeded in {seed_s:.0f}s (0: an earlier run's)", file=sys.stderr)
    print(table(rows, ["sets", "backups", "snapshots", "every manifest s (ms/set)", "index rebuild s (ms/set)",
                       "index warm s, median of 3 (ms/set)", "warm beyond empty s (ms/set)"]))
    print(f"empty bucket: {empty_s:.3f}s; every manifest read only up to {args.old_up_to} sets")

if __name__ == "__main__":
    main()
