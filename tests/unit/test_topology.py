"""Restoring into another topology: replication checked against the target cluster, and rewritten."""
from __future__ import annotations

import pytest

from dmf.core.errors import InputError
from dmf.core.schema import restore_statements
from dmf.core.targets import DbTarget
from dmf.core.topology import fit_replication, parse_dc_map, parse_replication

SCHEMA = """CREATE KEYSPACE shop WITH replication = {'class': 'org.apache.cassandra.locator.NetworkTopologyStrategy', 'dc_east': '3'}  AND durable_writes = true;

CREATE TABLE shop.orders (
    id int PRIMARY KEY,
    note text
) WITH ID = 5a1c395e-b41f-11e5-9f22-ba0be0483c18;
"""
SIMPLE = SCHEMA.replace("'org.apache.cassandra.locator.NetworkTopologyStrategy', 'dc_east': '3'",
                        "'org.apache.cassandra.locator.SimpleStrategy', 'replication_factor': '3'")


def keyspace_statement(cql: str) -> str:
    return restore_statements(cql, DbTarget("shop"))[0]


def test_a_replication_the_cluster_holds_passes_unchanged():
    cql, used = fit_replication(SCHEMA, "shop", {"dc_east": 3, "dc_west": 3})
    assert "'dc_east': 3" in keyspace_statement(cql) and used.endswith("'dc_east': 3}")
    assert "WITH ID = 5a1c395e" in cql and "AND durable_writes = true" in keyspace_statement(cql)


@pytest.mark.parametrize("schema, datacenters, expected", [
    (SCHEMA, {"datacenter1": 3}, "datacenter 'dc_east' (RF 3) does not exist here"),
    (SCHEMA, {"dc_east": 1}, "RF 3 in 'dc_east', which has 1 node(s)"),
    (SIMPLE, {"datacenter1": 1}, "RF 3 on 1 node(s)"),
])
def test_what_the_cluster_cannot_hold_is_named_with_the_fix(schema, datacenters, expected):
    with pytest.raises(InputError) as refused:
        fit_replication(schema, "shop", datacenters)
    message = str(refused.value)
    assert expected in message and "--dc-map" in message and "--replication" in message and "\n" not in message


def test_dc_map_renames_and_replication_replaces():
    cql, _ = fit_replication(SCHEMA, "shop", {"datacenter1": 3}, dc_map=parse_dc_map("dc_east:datacenter1"))
    assert "'datacenter1': 3" in keyspace_statement(cql) and "dc_east" not in cql
    one = parse_replication("{'class': 'SimpleStrategy', 'replication_factor': 1}")
    cql, used = fit_replication(SCHEMA, "shop", {"datacenter1": 1}, replication=one)
    assert used == "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    assert "SimpleStrategy" in keyspace_statement(cql) and "dc_east" not in cql
    with pytest.raises(InputError, match="RF 1 in 'dc_east', which has 0"):
        fit_replication(SCHEMA, "shop", {"dc_east": 0}, replication=parse_replication(
            "{'class': 'NetworkTopologyStrategy', 'dc_east': 1}"))


def test_a_schema_without_the_keyspace_is_left_alone():
    table_only = SCHEMA.split("\n\n", 1)[1]
    assert fit_replication(table_only, "shop", {"datacenter1": 1}) == (table_only, "")


@pytest.mark.parametrize("text", ["3", "{'class': 'SimpleStrategy'}", "{'class': 'SimpleStrategy', 'replication_factor': 0}",
                                  "{'class': 'NetworkTopologyStrategy'}", "{'class': 'Foo', 'x': 1}",
                                  "{'class': 'SimpleStrategy', 'replication_factor': 1}; DROP KEYSPACE x",
                                  "{'class': 'NetworkTopologyStrategy', 'dc 1': 1}"])
def test_bad_replication_is_refused(text):
    with pytest.raises(InputError):
        parse_replication(text)


@pytest.mark.parametrize("text", ["dc1", "dc1:", "dc1:dc2,dc1:dc3", "dc1:dc 2", "a:b;c"])
def test_bad_dc_map_is_refused(text):
    with pytest.raises(InputError):
        parse_dc_map(text)
