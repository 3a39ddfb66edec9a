"""Commit-log recovery point on the test bed, every way of shipping in one run: at each of --rates
(KiB/s of writes; RF 3 on three nodes, so every node holds all of it), one pass per mode:
  scheduled  `ship-commitlogs` every --interval seconds, as its deployment's schedule runs it (today);
  shipper    the long-lived shipper (`ship-commitlogs-continuous`, in a process of its own);
  cdc        the shipper with the table `cdc = true` and each host's cdc_raw_dir set (block `bench-cdc`),
             so the active segment's durable prefix ships every few seconds.
It prints one table: per pass the lag a disaster would lose, p50/p99/max, and whether the target is met
(shipper: p99 within the segment's fill time + 5 s; CDC: p99 within 10 s).

    .venv/bin/dmf-testbed up && .venv/bin/python bench/commitlog_rpo.py    # 6 passes, ~11 min

The lag at second t, per node: t minus the newest close time (a CDC prefix's: its sync time) held by a
batch sealed by t (batch manifests record both), counted from the pass's first write. Until a segment
written in the pass is shipped, that is t minus the pass's start: a lower bound. A pass's figures are
exact (steady state: from each node's first shipped segment of the pass) when every node's recovery
point moved at least twice, i.e. the pass saw the lag grow until the next segment landed; otherwise
they are lower bounds, shown "≥": at 4 KiB/s a 1 MiB segment fills in 256 s, longer than a pass.

Between passes: the shipper has exited and its lease is free (checked), the table is truncated and its
`cdc` flag set for the mode, and a one-shot run ships what the last pass left archived.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KEYSPACE, bed, ensure_table, parse_args, table  # noqa: E402

from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402

from dmf.blocks import DEFAULT_BLOCK  # noqa: E402
from dmf.core.catalog import SEGMENTS_CLOSED_AT  # noqa: E402
from dmf.core.keys import SetKind, heartbeat_key, leases_prefix  # noqa: E402
from dmf.core.shipper import Heartbeat, shipper_lease_name  # noqa: E402
from dmf.core.timestamps import parse_ts, utcnow  # noqa: E402
from dmf.cql import connect, node_facts  # noqa: E402
from dmf.flows.backup_snapshot import backup_snapshot  # noqa: E402
from dmf.flows.ship_commitlogs import ship_commitlogs  # noqa: E402
from dmf.repository import Repository  # noqa: E402
from dmf.storage import Storage  # noqa: E402
from dmf.testbed import prefect_server  # noqa: E402

RPO_TABLE = "rpo"
ROW_BYTES = 1024
SEGMENT_KIB = 1024  # the bed's commitlog_segment_size (testbed/cassandra.py)
MODES = ("scheduled", "shipper", "cdc")
CDC_BLOCK = "bench-cdc"
# The shipper lives this much longer than the pass: its start, until every node's shipper has beaten.
STARTUP_S = 5
SHIPPER_SLACK_S, CDC_TARGET_S = 5, 10
HEADER = ["mode", "writes KiB/s", "segment", "fills in s", "pass s", "runs", "batches", "segments shipped",
          "close→sealed max s", "RPO p50 s", "RPO p99 s", "RPO max s", "target", "target met"]


@dataclass(frozen=True)
class Bed:
    tb: object
    block: object
    storage: Storage
    cluster_name: str
    host_ids: tuple[str, ...]


def write_steadily(block, rate_kib: int, stop: threading.Event, failed: list) -> None:
    """`rate_kib` KiB/s of 1 KiB rows (replicated to every node: RF 3 on three nodes). A write that fails
    (a timeout on the loaded bed) is counted in `failed`, not retried: the lag is measured in time."""
    with connect(block, timeout=60) as session:
        insert = session.prepare(f"INSERT INTO {KEYSPACE}.{RPO_TABLE} (id, payload) VALUES (?, ?)")
        next_id, tick = 0, time.monotonic()
        while not stop.is_set():
            futures = [session.execute_async(insert, (next_id + i, os.urandom(ROW_BYTES))) for i in range(rate_kib)]
            for future in futures:
                try:
                    future.result()
                except Exception as exc:  # noqa: BLE001 — counted and reported
                    failed.append(exc)
            next_id += rate_kib
            tick += 1.0
            stop.wait(max(0.0, tick - time.monotonic()))


@contextmanager
def writing(block, rate_kib: int) -> Iterator[datetime]:
    """Writes steadily for the duration; yields when the writes started."""
    stop, failed = threading.Event(), []
    writer = threading.Thread(target=write_steadily, args=(block, rate_kib, stop, failed), daemon=True)
    started = utcnow()
    writer.start()
    try:
        yield started
    finally:
        died = not writer.is_alive()
        stop.set()
        writer.join()
    if died:  # its traceback is on stderr: a pass without writes measures nothing
        raise SystemExit("the writer stopped before the pass ended")
    if failed:
        print(f"{len(failed)} of the pass's writes failed, the first: {failed[0]!r}", file=sys.stderr)


def lease_free(bed: Bed) -> None:
    if held := list(bed.storage.list_objects(leases_prefix(shipper_lease_name(bed.cluster_name)))):
        raise SystemExit(f"a shipper holds {held[0]['Key']}: the passes need the cluster's shipping to themselves")


def reset(bed: Bed, mode: str) -> None:
    """Before each pass: no shipper running, the table emptied and its `cdc` flag set for the mode, and
    what earlier passes left archived shipped, so that a pass measures only its own writes."""
    lease_free(bed)
    with connect(bed.block, timeout=60) as session:
        session.execute(f"TRUNCATE {KEYSPACE}.{RPO_TABLE}")
        session.execute(f"ALTER TABLE {KEYSPACE}.{RPO_TABLE} WITH cdc = {'true' if mode == 'cdc' else 'false'}")
    ship_commitlogs()


def scheduled_pass(bed: Bed, rate: int, duration: int, interval: int) -> tuple[datetime, datetime, int]:
    """A shipping run every `interval` s (a run longer than that delays the next, as Prefect's would)."""
    with writing(bed.block, rate) as started:
        deadline, runs = time.monotonic() + duration, 0
        while time.monotonic() < deadline:
            tick = time.monotonic()
            ship_commitlogs()
            runs += 1
            time.sleep(max(0.0, min(interval - (time.monotonic() - tick), deadline - time.monotonic())))
        end = utcnow()
    return started, end, runs


def shipper_pass(bed: Bed, rate: int, duration: int, cluster_block: str) -> tuple[datetime, datetime, int]:
    """One shipper run, writes from when every node's shipper is up until the run's end of life."""
    launched = utcnow()
    code = ("from dmf.flows.ship_commitlogs_continuous import ship_commitlogs_continuous as f; "
            f"f(cluster_block={cluster_block!r}, lifetime_s={duration + STARTUP_S}, handover_tick_s=1)")
    with tempfile.TemporaryFile() as log:
        shipper = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PREFECT_API_URL": prefect_server.api_url(bed.tb)})

        def failed(why: str) -> SystemExit:
            log.seek(0)
            return SystemExit(f"the shipper {why}:\n{log.read().decode(errors='replace')[-3000:]}")
        try:
            until = shipper_up(bed, launched, shipper, failed)
            with writing(bed.block, rate) as started:
                if shipper.wait(timeout=duration + 300) != 0:
                    raise failed("failed")
        finally:
            if shipper.poll() is None:  # interrupted: SIGINT unwinds the flow, which releases its lease
                shipper.send_signal(signal.SIGINT)
                shipper.wait(timeout=60)
    return started, until, 1


def shipper_up(bed: Bed, launched: datetime, shipper: subprocess.Popen, failed) -> datetime:
    """Waits until every node's shipper has beaten (its agent watches the archive); its end of life."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        beats = [bed.storage.get_bytes(heartbeat_key(bed.cluster_name, h), missing_ok=True) for h in bed.host_ids]
        beats = [Heartbeat.from_json("", b) for b in beats if b]
        if len(beats) == len(bed.host_ids) and all(b.beat_at >= launched for b in beats):
            return min(b.until for b in beats)
        if shipper.poll() is not None:
            raise failed("ended before every node's shipper was up (standing by behind another's lease?)")
        time.sleep(0.5)
    raise failed("was not up on every node within 120 s")


def batches_of(bed: Bed, started: datetime) -> list[tuple[str, datetime, list[datetime]]]:
    """(host_id, seal time, close times) of the bed's nodes' batches opened since shortly before `started`
    (a batch opened just before may hold a segment closed after)."""
    catalog = Repository(bed.storage).catalog(start=started - timedelta(seconds=60), kinds={SetKind.COMMITLOG})
    return [(m.host_id, m.created_at, [parse_ts(c) for c in m.extra[SEGMENTS_CLOSED_AT].values()])
            for g in catalog.commitlogs for m in g.manifests if m.host_id in bed.host_ids]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lag_stats(batches: list[tuple[str, datetime, list[datetime]]], nodes, started: datetime,
              end: datetime) -> dict:
    """The lag at each second of [started, end] per node (see the module's docstring): p50/p99/max, exact
    or lower bounds, and how long each segment (or prefix) of the pass took from closing to sealed."""
    samples: list[tuple[float, bool]] = []  # (lag, exact)
    moves = []
    for node in nodes:
        sealed = sorted((at, max(closes)) for n, at, closes in batches if n == node and closes)
        point, moved, i, at = None, 0, 0, started
        while at <= end:
            while i < len(sealed) and sealed[i][0] <= at:
                if sealed[i][1] >= started and (point is None or sealed[i][1] > point):
                    point, moved = sealed[i][1], moved + 1
                i += 1
            samples.append(((at - (point or started)).total_seconds(), point is not None))
            at += timedelta(seconds=1)
        moves.append(moved)
    exact = min(moves) >= 2
    lags = [lag for lag, known in samples if known or not exact]
    delays = [(at - c).total_seconds() for _, at, closes in batches if started <= at <= end
              for c in closes if c >= started]
    return {"exact": exact, "p50": percentile(lags, 0.5), "p99": percentile(lags, 0.99), "max": max(lags),
            "delay": max(delays, default=None), "batches": sum(1 for _, at, _ in batches if started <= at <= end),
            "segments": sum(len(c) for _, at, c in batches if started <= at <= end)}


def row(mode: str, rate: int, started: datetime, end: datetime, runs: int, s: dict) -> list[str]:
    fill = SEGMENT_KIB / rate
    bound = "" if s["exact"] else "≥ "
    target = {"scheduled": None, "shipper": fill + SHIPPER_SLACK_S, "cdc": CDC_TARGET_S}[mode]
    if target is None:
        verdict = "(today's way)"
    elif s["p99"] > target:
        verdict = "missed"
    else:
        verdict = "met" if s["exact"] else "not shown: pass < 2 fills"
    return [mode, f"{rate}", f"{SEGMENT_KIB // 1024} MiB", f"{fill:.0f}", f"{(end - started).total_seconds():.0f}",
            f"{runs}", f"{s['batches']}", f"{s['segments']}", "–" if s["delay"] is None else f"{s['delay']:.0f}",
            *(f"{bound}{s[k]:.0f}" for k in ("p50", "p99", "max")),
            "–" if target is None else f"p99 ≤ {target:.0f}", verdict]


def main() -> None:
    args = parse_args(__doc__, {}, lambda parser: (
        setattr(parser, "formatter_class", argparse.RawDescriptionHelpFormatter),
        parser.add_argument("--modes", default=",".join(MODES), help="passes per rate (default: %(default)s)"),
        parser.add_argument("--rates", default="256,4", help="KiB/s written, one pass per mode each "
                            "(default: %(default)s)"),
        parser.add_argument("--duration", type=int, default=90, help="seconds of writes per pass (default: "
                            "%(default)s)"),
        parser.add_argument("--interval", type=int, default=15, help="scheduled mode: seconds between runs "
                            "(default: %(default)s)")))
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"unknown mode(s): {', '.join(sorted(unknown))}")
    tb, block, repository = bed()
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url(tb)}):  # where the flows find the blocks
        rows = passes(tb, block, repository, modes, args)
    print(table(rows, HEADER))


def passes(tb, block, repository, modes: list[str], args) -> list[list[str]]:
    ensure_table(block)
    with connect(block) as session:
        session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.{RPO_TABLE} (id int PRIMARY KEY, payload blob)")
        host_ids = tuple(f.host_id for f in node_facts(session).values())
        cluster_name = session.cluster.metadata.cluster_name
    backup_snapshot(db_target=f"{KEYSPACE}.{RPO_TABLE}", new=True)  # batches ship under a full snapshot
    if "cdc" in modes:  # the bed's nodes run with cdc_enabled (testbed/cassandra.py)
        block.model_copy(update={"hosts": [h.model_copy(update={"cdc_raw_dir": str(
            tb.node(int(h.address.rsplit(".", 1)[1])).dir("cdc_raw"))}) for h in block.hosts]}).save(
            CDC_BLOCK, overwrite=True)
    the_bed = Bed(tb, block, Storage(repository), cluster_name, host_ids)
    rows = []
    for rate in (int(r) for r in args.rates.split(",")):
        for mode in modes:
            reset(the_bed, mode)
            if mode == "scheduled":
                started, end, runs = scheduled_pass(the_bed, rate, args.duration, args.interval)
            else:
                started, end, runs = shipper_pass(the_bed, rate, args.duration,
                                                  CDC_BLOCK if mode == "cdc" else DEFAULT_BLOCK)
            stats = lag_stats(batches_of(the_bed, started), host_ids, started, end)
            rows.append(row(mode, rate, started, end, runs, stats))
            print(table(rows[-1:], HEADER), flush=True)  # each pass as it ends: a long run shows progress
    lease_free(the_bed)
    return rows

if __name__ == "__main__":
    main()
