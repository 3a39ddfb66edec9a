"""Shared helpers for integration tests: data written through CQL, the bucket read through boto3.

Each backup run costs ~12 s of fixed cost and each restore starts sstableloader JVMs, so a test that
only reads a chain or a restore's result reuses one instead of making its own:
- `shared_chain` (session, tests/integration/conftest.py): one chain of a live table: full +
  incremental + shipped commit logs, with restore points between the writes. Read it (list, status
  of its rows, verify, restore to a time, deployment runs); add no backup of its target; put back any
  object you change; drop its table (and restore with the schema) before restoring into it, never
  TRUNCATE it (the record would hide its writes from a later commit-log replay).
- `testbed`, `cluster_block`, `repository_block`, `solo_cluster`, `moto_repository`, `any_s3`
  (session, tests/conftest.py).
- `new_table` + `insert_rows` (concurrent, CL ALL) for a table of a test's own; `tick()` for a restore
  point strictly between two writes (polls the clock, no fixed sleep); `close_active_segments` before
  shipping what was just written.
- `kill_when` for a real CLI run killed (SIGKILL) at a known point; `save_as` to save a shared block under a name of its own.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
from cassandra import ConsistencyLevel
from cassandra.concurrent import execute_concurrent_with_args

from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import connect

HOSTS = "127.0.0.1,127.0.0.2,127.0.0.3"


def new_table(cluster_block, rows: int = 0, prefix: str = "k") -> tuple[str, str]:
    keyspace = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with connect(cluster_block) as session:
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 3}")
        session.execute(f"CREATE TABLE {keyspace}.events (id int PRIMARY KEY, payload text)")
    if rows:
        insert_rows(cluster_block, keyspace, "events", range(rows))
    return keyspace, "events"


def insert_rows(cluster_block, keyspace: str, table: str, ids, payload: str = "p" * 100) -> None:
    """Every row acknowledged by every replica, written 64 at a time (one at a time cost seconds per test)."""
    with connect(cluster_block) as session:
        insert = session.prepare(f"INSERT INTO {keyspace}.{table} (id, payload) VALUES (?, ?)")
        insert.consistency_level = ConsistencyLevel.ALL
        execute_concurrent_with_args(session, insert, [(i, payload) for i in ids], concurrency=64,
                                     raise_on_first_error=True)


def close_active_segments(cluster_block, keyspace: str) -> None:
    """Closes every node's active commit-log segment (1 MiB), so that what was written before is
    archived: 2.5 MB into a `filler` table of `keyspace` (RF 3: every node writes all of it). 250 rows
    of 10 kB, not 2,500 of 1 kB: the same bytes in a quarter of the time (0.8 s instead of 3.4 s on
    the bed), the round trips at CL ALL being what cost."""
    with connect(cluster_block) as session:
        session.execute(f"CREATE TABLE {keyspace}.filler (id int PRIMARY KEY, payload text)")
    insert_rows(cluster_block, keyspace, "filler", range(250), payload="f" * 10_000)


def next_second() -> str:
    """The timestamp (1 s resolution) of the first moment of the next second, once the clock is past it."""
    now = format_ts(utcnow())
    while (later := format_ts(utcnow())) == now:
        time.sleep(0.02)
    return later


def tick() -> str:
    """A timestamp strictly between what happened before and what happens after (1 s resolution):
    the next second, returned once the one after it has begun (about 1.5 s, not a fixed 2.2 s)."""
    mark = next_second()
    next_second()
    return mark


def keys_under(repository_block, prefix: str) -> list[str]:
    s3 = repository_block.client()
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=repository_block.bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def ids(cluster_block, table: str) -> set[int]:
    with connect(cluster_block) as session:
        return {r.id for r in session.execute(f"SELECT id FROM {table}")}


def drop(cluster_block, table: str) -> None:
    """The operator's story: the table is gone (whatever an earlier test restored into it)."""
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE IF EXISTS {table}")


def drop_and_restore(cluster_block, path, table: str, db_target: str | None = None) -> dict:
    """The operator's story: DROP TABLE, then restore (with the schema) the table or its keyspace."""
    from dmf.flows.restore_snapshot import restore_snapshot
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {table}")
    return restore_snapshot(hosts=HOSTS, path=str(path), db_target=db_target or table, restore_schema=True)


def kill_when(script: str, args: list[str], ready: Callable[[], bool], what: str, timeout: float = 300,
              env: dict[str, str] | None = None) -> None:
    """Runs `python -c script args` (the real CLI, `script` holding one of its steps so that the kill lands
    at a known point; `env` added to its environment) and kills it (SIGKILL, its whole session) once
    `ready()`; fails if it ended before."""
    run = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and run.poll() is None:
            if ready():
                return
            time.sleep(0.2)
        pytest.fail(f"the run ended before {what}")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()


def save_as(block, name: str) -> None:
    """Saves the block under `name`. Not `block.save(name, overwrite=True)` on a block saved before under
    another name: Prefect then overwrites that other document and leaves `name` as it was."""
    type(block).model_validate(block.model_dump()).save(name, overwrite=True)
