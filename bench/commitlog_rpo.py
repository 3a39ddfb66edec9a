"""Commit-log recovery point on the test bed: writes at a fixed rate while `ship-commitlogs` runs
every INTERVAL seconds (as its schedule would), then reads from the bucket how far behind the
newest recoverable write each moment was. `--shipper` measures the long-lived shipper instead
(`ship-commitlogs-continuous`, in a process of its own) at each of `--rates`: the lag at every
second of the run, per node, from the batches' seal times and close times; `--cdc` with the table
`cdc = true` and each host's cdc_raw_dir set (block `bench-cdc`), so CDC prefixes ship too.

    .venv/bin/dmf-testbed up && .venv/bin/python bench/commitlog_rpo.py [--intervals 15,60]
    .venv/bin/python bench/commitlog_rpo.py --shipper [--cdc] --rates 256,4 --duration 600

Only closed segments are archived, so what S3 can restore at a moment is every write up to the
close time of the newest segment shipped by then (batch manifests record close times). The lag
peaks just before a shipping run lands: that moment minus the newest close time it could restore.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KEYSPACE, bed, ensure_table, parse_args, table  # noqa: E402

from dmf.core.catalog import SEGMENTS_CLOSED_AT  # noqa: E402
from dmf.core.keys import SetKind  # noqa: E402
from dmf.core.timestamps import parse_ts  # noqa: E402
from dmf.cql import connect  # noqa: E402
from dmf.flows.backup_snapshot import backup_snapshot  # noqa: E402
from dmf.flows.ship_commitlogs import ship_commitlogs  # noqa: E402
from dmf.repository import Repository  # noqa: E402
from dmf.storage import Storage  # noqa: E402

RPO_TABLE = "rpo"
ROW_BYTES = 1024


def write_steadily(block, rate_kib: int, stop: threading.Event) -> None:
    """`rate_kib` KiB/s of 1 KiB rows (replicated to every node: RF 3 on three nodes)."""
    with connect(block, timeout=60) as session:
        insert = session.prepare(f"INSERT INTO {KEYSPACE}.{RPO_TABLE} (id, payload) VALUES (?, ?)")
        next_id, tick = 0, time.monotonic()
        while not stop.is_set():
            futures = [session.execute_async(insert, (next_id + i, os.urandom(ROW_BYTES))) for i in range(rate_kib)]
            for future in futures:
                future.result()
            next_id += rate_kib
            tick += 1.0
            stop.wait(max(0.0, tick - time.monotonic()))


def measure(block, repo: Repository, interval: int, duration: int, rate_kib: int) -> dict:
    stop = threading.Event()
    writer = threading.Thread(target=write_steadily, args=(block, rate_kib, stop), daemon=True)
    ship_commitlogs()  # a clean start: nothing archived before the measurement is counted
    started = datetime.now(timezone.utc)
    writer.start()
    runs: list[tuple[datetime, set[str]]] = []  # when each shipping run landed, the batches it sealed
    ship_seconds: list[float] = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        tick = time.monotonic()
        results = ship_commitlogs()
        runs.append((datetime.now(timezone.utc), {r["prefix"] for r in results if r["segments"]}))
        ship_seconds.append(time.monotonic() - tick)
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    stop.set()
    writer.join()

    manifests = {m.set.prefix: m for g in repo.catalog(start=started, kinds={SetKind.COMMITLOG}).commitlogs
                 for m in g.manifests}
    newest: dict[str, datetime] = {}  # host_id → newest close time S3 holds, after the runs so far
    lags, segments = [], 0
    for landed, prefixes in runs:
        if newest:
            # Just before this run landed, S3 held what the earlier runs shipped.
            lags.extend((landed - closed).total_seconds() for closed in newest.values())
        for prefix in prefixes:
            manifest = manifests[prefix]
            closes = [parse_ts(c) for c in manifest.extra[SEGMENTS_CLOSED_AT].values()]
            segments += len(closes)
            newest[manifest.host_id] = max([*closes, newest.get(manifest.host_id, started)])
    return {"runs": len(runs), "segments": segments, "ship_s": statistics.median(ship_seconds),
            "median": statistics.median(lags), "max": max(lags)}


def lags_per_second(batches: list[tuple[str, datetime, list[datetime]]], start: datetime,
                    end: datetime) -> list[float]:
    """At each second of [start, end] and for each node: that second minus the newest close time a
    batch sealed by then holds (host_id, seal time, close times), i.e. what a disaster then would lose."""
    lags = []
    nodes = {node for node, _, _ in batches}
    at = start
    while at <= end:
        for node in nodes:
            closes = [c for n, sealed, cs in batches if n == node and sealed <= at for c in cs]
            if closes:
                lags.append(max(0.0, (at - max(closes)).total_seconds()))
        at += timedelta(seconds=1)
    return lags


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_shipper(tb, block, repo: Repository, duration: int, rate_kib: int, cluster_block: str) -> dict:
    from dmf.testbed import prefect_server
    stop = threading.Event()
    writer = threading.Thread(target=write_steadily, args=(block, rate_kib, stop), daemon=True)
    ship_commitlogs()  # a clean start
    started = datetime.now(timezone.utc)
    code = ("from dmf.flows.ship_commitlogs_continuous import ship_commitlogs_continuous as f; "
            f"f(cluster_block={cluster_block!r}, lifetime_s={duration}, handover_tick_s=1)")
    shipper = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PREFECT_API_URL": prefect_server.api_url(tb)})
    writer.start()
    if shipper.wait(timeout=duration + 300) != 0:
        raise SystemExit("the shipper failed")
    stop.set()
    writer.join()
    batches = [(m.host_id, m.created_at, [parse_ts(c) for c in m.extra[SEGMENTS_CLOSED_AT].values()])
               for g in repo.catalog(start=started, kinds={SetKind.COMMITLOG}).commitlogs for m in g.manifests]
    # From when every node has sealed a first batch: before, a lag would count the clean start's leftovers.
    first = max(min(sealed for n, sealed, _ in batches if n == node) for node in {b[0] for b in batches})
    lags = lags_per_second(batches, first, datetime.now(timezone.utc) - timedelta(seconds=5))
    return {"batches": len(batches), "segments": sum(len(c) for _, _, c in batches),
            "p50": percentile(lags, 0.5), "p99": percentile(lags, 0.99), "max": max(lags)}


def main() -> None:
    args = parse_args(__doc__, {}, lambda parser: (
        parser.add_argument("--intervals", default="15,60", help="shipping intervals to measure, seconds"),
        parser.add_argument("--duration", type=int, default=180, help="seconds of writes per interval"),
        parser.add_argument("--rate", type=int, default=256, help="KiB/s written (each node holds all of it)"),
        parser.add_argument("--shipper", action="store_true", help="measure the long-lived shipper instead"),
        parser.add_argument("--cdc", action="store_true", help="with --shipper: the table with cdc = true"),
        parser.add_argument("--rates", default="256,4", help="with --shipper: KiB/s written, one pass each")))
    tb, block, repository = bed()
    ensure_table(block)
    with connect(block) as session:
        session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.{RPO_TABLE} (id int PRIMARY KEY, payload blob)")
    backup_snapshot(db_target=f"{KEYSPACE}.{RPO_TABLE}", new=True)  # batches ship under a full snapshot
    repo = Repository(Storage(repository))
    rows = []
    if args.shipper:
        cluster_block = "default"
        with connect(block) as session:
            session.execute(f"ALTER TABLE {KEYSPACE}.{RPO_TABLE} WITH cdc = {'true' if args.cdc else 'false'}")
        if args.cdc:  # the bed's nodes run with cdc_enabled (testbed/cassandra.py)
            cluster_block = "bench-cdc"
            block.model_copy(update={"hosts": [h.model_copy(update={"cdc_raw_dir": str(
                tb.node(int(h.address.rsplit(".", 1)[1])).dir("cdc_raw"))}) for h in block.hosts]}).save(
                cluster_block, overwrite=True)
        for rate in (int(r) for r in args.rates.split(",")):
            r = measure_shipper(tb, block, repo, args.duration, rate, cluster_block)
            rows.append(["shipper + CDC" if args.cdc else "shipper", f"{rate}", "1 MiB", f"{1024 / rate:.0f}", f"{r['batches']}", f"{r['segments']}",
                         f"{r['p50']:.0f}", f"{r['p99']:.0f}", f"{r['max']:.0f}"])
        print(table(rows, ["mode", "writes KiB/s", "segment", "segment fills in s", "batches", "segments shipped",
                           "RPO p50 s", "RPO p99 s", "RPO max s"]))
        return
    for interval in (int(i) for i in args.intervals.split(",")):
        r = measure(block, repo, interval, args.duration, args.rate)
        rows.append([f"{interval}", f"{args.rate}", "1 MiB", f"{1024 / args.rate:.0f}", f"{r['runs']}",
                     f"{r['segments']}", f"{r['ship_s']:.1f}", f"{r['median']:.0f}", f"{r['max']:.0f}",
                     f"{r['max'] / interval:.2f}"])
    print(table(rows, ["interval s", "writes KiB/s", "segment", "segment fills in s", "runs", "segments shipped",
                       "run s (median)", "RPO median s", "RPO max s", "max / interval"]))


if __name__ == "__main__":
    main()
