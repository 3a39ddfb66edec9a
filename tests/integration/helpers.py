"""Shared helpers for integration tests: data written through CQL, the bucket read through boto3."""
from __future__ import annotations

import uuid

from cassandra import ConsistencyLevel
from cassandra.concurrent import execute_concurrent_with_args

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


def keys_under(repository_block, prefix: str) -> list[str]:
    s3 = repository_block.client()
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=repository_block.bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def ids(cluster_block, table: str) -> set[int]:
    with connect(cluster_block) as session:
        return {r.id for r in session.execute(f"SELECT id FROM {table}")}


def drop_and_restore(cluster_block, path, table: str, db_target: str | None = None) -> dict:
    """The operator's story: DROP TABLE, then restore (with the schema) the table or its keyspace."""
    from dmf.flows.restore_snapshot import restore_snapshot
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {table}")
    return restore_snapshot(hosts=HOSTS, path=str(path), db_target=db_target or table, restore_schema=True)
