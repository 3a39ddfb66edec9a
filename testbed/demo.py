"""`make demo`: the whole story on the local test bed, told the way an operator would run it.

Rows are written, a full backup taken, more rows, an incremental, more rows, a point in time
noted, more rows, enough writes to close commit-log segments, the segments shipped, the history
listed, the table dropped, and the table restored to the noted second with the real `dmf` CLI:
the snapshot chain, then the shipped commit logs replayed up to that second. Then the rows are
checked: every row written before the point, none after it.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cassandra import ConsistencyLevel
from cassandra.concurrent import execute_concurrent_with_args

from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import connect

from .blocks import cluster
from .layout import Testbed

HOSTS = "127.0.0.1,127.0.0.2,127.0.0.3"
TABLE = "demo.events"
FILLER = "demo.filler"
DMF = str(Path(sys.executable).with_name("dmf"))


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def dmf(*args: str) -> None:
    print(f"$ dmf {shlex.join(args)}", flush=True)
    # Prefect's per-task log lines go to the flow run (see the UI); the operator reads the summary.
    result = subprocess.run([DMF, *args], env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})
    if result.returncode != 0:
        sys.exit(f"demo: `dmf {shlex.join(args)}` failed (exit {result.returncode})")


def write(session, first: int, count: int, label: str) -> None:
    insert = session.prepare(f"INSERT INTO {TABLE} (id, written, payload) VALUES (?, ?, ?)")
    insert.consistency_level = ConsistencyLevel.QUORUM
    for i in range(first, first + count):
        session.execute(insert, (i, label, "x" * 200))
    print(f"wrote rows {first}..{first + count - 1} ({label})")


def main() -> int:
    tb = Testbed.from_env()
    block = cluster(tb, tb.nodes(3))
    with connect(block) as session:
        step("a keyspace with RF 3 and a table")
        session.execute("CREATE KEYSPACE IF NOT EXISTS demo WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 3}")
        session.execute(f"DROP TABLE IF EXISTS {TABLE}")
        session.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, written text, payload text)")
        write(session, 0, 1000, "t1")
    step("full backup (with the schema)")
    dmf("backup", "snapshot", HOSTS, "--db-target", TABLE, "--backup-schema", "--new")
    with connect(block) as session:
        write(session, 1000, 200, "t2")
    step("incremental backup: only the new SSTables travel")
    dmf("backup", "snapshot", HOSTS, "--db-target", TABLE)
    with connect(block) as session:
        write(session, 1200, 100, "t3, after the last backup")
    time.sleep(1.1)
    point = format_ts(utcnow())
    time.sleep(1.1)
    print(f"\nthe point in time to come back to: {point} (UTC)")
    with connect(block) as session:
        write(session, 1300, 300, "t4, after the point in time")
        step("more writes elsewhere, so that the commit-log segments holding t3 and t4 fill and close")
        fill_segments(session)
    step("ship the archived (closed) commit-log segments")
    dmf("backup", "commitlogs", HOSTS)
    step("what the bucket holds")
    dmf("backup", "list", "--start-time", point[:8] + "000000")
    step("an operator drops the table")
    with connect(block) as session:
        session.execute(f"DROP TABLE {TABLE}")
        session.execute(f"DROP TABLE {FILLER}")
    print(f"DROP TABLE {TABLE}")
    step(f"restore {TABLE} as it was at {point}: snapshot chain, then commit logs replayed to that second")
    with tempfile.TemporaryDirectory(prefix="dmf-demo-") as path:
        dmf("restore", "snapshot", HOSTS, path, TABLE, "--schema", "--time", point, "--replay-commitlogs")
    with connect(block) as session:
        rows = list(session.execute(f"SELECT id, written FROM {TABLE}"))
    batches = {}
    for row in rows:
        batches[row.written] = batches.get(row.written, 0) + 1
    step("check")
    print(f"{len(rows)} rows back: {dict(sorted(batches.items()))}")
    ok = batches == {"t1": 1000, "t2": 200, "t3, after the last backup": 100}
    print("OK: exactly the rows written before the point in time, t3 from the replayed commit logs"
          if ok else "MISMATCH")
    return 0 if ok else 1


def fill_segments(session) -> None:
    """~3 MiB of writes per node: more than the bed's 1 MiB segments, so the active ones close and are archived."""
    session.execute(f"CREATE TABLE IF NOT EXISTS {FILLER} (id int PRIMARY KEY, payload text)")
    insert = session.prepare(f"INSERT INTO {FILLER} (id, payload) VALUES (?, ?)")
    execute_concurrent_with_args(session, insert, [(i, "f" * 1000) for i in range(3000)], concurrency=32,
                                 raise_on_first_error=True)
    print("wrote 3000 rows of 1 KB to", FILLER)


if __name__ == "__main__":
    sys.exit(main())
