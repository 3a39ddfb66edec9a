"""Integration fixtures shared across test files (see tests/integration/helpers.py for the list)."""
from __future__ import annotations

import pytest

from .helpers import HOSTS, close_active_segments, insert_rows, new_table, tick


@pytest.fixture(scope="session")
def shared_chain(testbed, cluster_block):
    """One backup chain per session, for every test that only reads a chain (list, verify, restore to a
    time, deployment runs): t1 rows 0-99 + full (with schema); t2 rows 100-149 + incremental; t3a rows
    150-169, t3b rows 170-189; then the active segments closed (a `filler` table) and commit logs
    shipped. `between_t2_t3a` and `between_t3a_t3b` are restore points between those writes.

    Readers add no backup of its target and leave its objects as they found them. Its table is live,
    and a test may restore into it: it first drops the table (and restores the schema), so what it
    asserts never depends on what an earlier test left there. Never TRUNCATE it: the truncation's
    record would make a later commit-log replay of the table skip the writes before it."""
    keyspace, table = new_table(cluster_block, prefix="r")
    target = f"{keyspace}.{table}"
    from dmf.flows.backup_snapshot import backup_snapshot
    from dmf.flows.ship_commitlogs import ship_commitlogs
    insert_rows(cluster_block, keyspace, table, range(0, 100))              # t1
    full = backup_snapshot(hosts=HOSTS, db_target=target, backup_schema=True)
    insert_rows(cluster_block, keyspace, table, range(100, 150))            # t2
    incr = backup_snapshot(hosts=HOSTS, db_target=target)
    between_t2_t3a = tick()
    insert_rows(cluster_block, keyspace, table, range(150, 170))            # t3a
    between_t3a_t3b = tick()
    insert_rows(cluster_block, keyspace, table, range(170, 190))            # t3b
    close_active_segments(cluster_block, keyspace)  # so every write above is archived, then shipped
    shipped = ship_commitlogs(hosts=HOSTS)
    return dict(keyspace=keyspace, table=table, target=target, full=full, incr=incr, shipped=shipped,
                between_t2_t3a=between_t2_t3a, between_t3a_t3b=between_t3a_t3b)
