"""Point-in-time restore on the test bed, both ways, of the same data set: a table with a full backup,
ROWS rows of 64 KiB written after it and shipped in commit logs, dropped, then restored to a second
after those writes (a) replaying in a scratch Cassandra on the worker (the default) and (b) with
`--replay-on nodes` (each node restarted in turn). Measured: the whole restore's time, the replay's
share, and the production nodes' downtime (each node's CQL port polled every 0.2 s; the seconds any
node did not answer, summed over nodes).

    .venv/bin/python bench/pitr.py [--rows 200]
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KEYSPACE, bed, table, write_rows  # noqa: E402

PITR_TABLE = "pitr"  # its own table: bench.data is the other benchmarks'


class Downtime:
    """Seconds each node's CQL port did not answer while the restore ran."""

    def __init__(self, addresses: list[str]):
        self.down = dict.fromkeys(addresses, 0.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll)

    def _poll(self) -> None:
        while not self.stop.is_set():
            for address in self.down:
                try:
                    socket.create_connection((address, 9042), timeout=0.2).close()
                except OSError:
                    self.down[address] += 0.2
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def history(rows: int) -> str:
    """The data set: full backup, ROWS rows after it, the point, filler to close the segments, shipped."""
    from dmf.cql import connect
    from dmf.core.timestamps import format_ts, utcnow
    from dmf.flows.backup_snapshot import backup_snapshot
    from dmf.flows.ship_commitlogs import ship_commitlogs
    _, block, _ = bed()
    with connect(block) as session:
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 3}")
        session.execute(f"DROP TABLE IF EXISTS {KEYSPACE}.{PITR_TABLE}")
        session.execute(f"CREATE TABLE {KEYSPACE}.{PITR_TABLE} (id int PRIMARY KEY, payload blob) "
                        "WITH compression = {'enabled': 'false'}")
    write_rows(block, 0, rows, PITR_TABLE)
    backup_snapshot(hosts="127.0.0.1,127.0.0.2,127.0.0.3", db_target=f"{KEYSPACE}.{PITR_TABLE}", backup_schema=True)
    write_rows(block, rows, rows, PITR_TABLE)
    time.sleep(1.1)
    point = format_ts(utcnow())
    time.sleep(1.1)
    with connect(block) as session:
        session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.filler (id int PRIMARY KEY, payload blob)")
    # 1 MiB segments on the bed: 40 rows of 64 KiB close a few of them on every node.
    with connect(block) as session:
        insert = session.prepare(f"INSERT INTO {KEYSPACE}.filler (id, payload) VALUES (?, ?)")
        for i in range(40):
            session.execute(insert, (i, b"f" * 65536))
    ship_commitlogs(hosts="127.0.0.1,127.0.0.2,127.0.0.3")
    return point


def restore(point: str, replay_on: str) -> dict:
    from dmf.cql import connect
    from dmf.flows.restore_snapshot import restore_snapshot
    _, block, _ = bed()
    with connect(block) as session:
        session.execute(f"DROP TABLE IF EXISTS {KEYSPACE}.{PITR_TABLE}")
    path = Path(tempfile.mkdtemp(prefix="bench-pitr-"))
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    started = time.monotonic()
    with Downtime(hosts) as downtime:
        summary = restore_snapshot(hosts=",".join(hosts), path=str(path), db_target=f"{KEYSPACE}.{PITR_TABLE}",
                                   restore_schema=True, time=point, replay_commitlogs=True, replay_on=replay_on)
    seconds = time.monotonic() - started
    shutil.rmtree(path)
    with connect(block) as session:
        count = session.execute(f"SELECT COUNT(*) FROM {KEYSPACE}.{PITR_TABLE}").one()[0]
    replay = summary.get("replay") or {}
    return {"seconds": seconds, "replay_seconds": replay.get("replay_seconds"), "rows": count,
            "downtime": sum(downtime.down.values()), "mutations": sum(summary["replayed_mutations"].values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200, help="rows of 64 KiB before the backup, and after it")
    args = parser.parse_args()
    point = history(args.rows)
    results = {way: restore(point, way) for way in ("scratch", "nodes")}
    print(table([[way, f"{r['seconds']:.0f}", f"{r['replay_seconds'] or '-'}", f"{r['downtime']:.1f}",
                  str(r["mutations"]), str(r["rows"])] for way, r in results.items()],
                ["replay on", "restore s", "replay s", "production downtime s (sum over nodes)",
                 "mutations", "rows"]))
    if {r["rows"] for r in results.values()} != {2 * args.rows}:
        sys.exit(f"a restore did not bring back the {2 * args.rows} rows: {results}")


if __name__ == "__main__":
    main()
