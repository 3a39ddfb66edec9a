from dmf.core.schema import copy_statements, restore_statements, split_statements
from dmf.core.targets import DbTarget

DESCRIBED = """CREATE KEYSPACE shop WITH replication = {'class': 'SimpleStrategy', 'replication_factor': '3'}  AND durable_writes = true;

CREATE TYPE shop.address (
    street text
);

CREATE TABLE shop.orders (
    id int PRIMARY KEY,
    v text
) WITH ID = 1a2b3c4d-0000-11f0-8000-000000000001
    AND compaction = {'class': 'SizeTieredCompactionStrategy'};

CREATE INDEX orders_v ON shop.orders (v);

CREATE TABLE shop.carts (
    id int PRIMARY KEY
) WITH ID = 1a2b3c4d-0000-11f0-8000-000000000002;
"""


def test_split_statements():
    statements = split_statements(DESCRIBED)
    assert len(statements) == 5 and all(s.endswith(";") for s in statements)


def test_restore_statements_for_one_table_keep_the_id_and_are_idempotent():
    statements = restore_statements(DESCRIBED, DbTarget.parse("shop.orders"))
    assert [s.split("(")[0].split(" WITH")[0].strip() for s in statements] == [
        "CREATE KEYSPACE IF NOT EXISTS shop", "CREATE TYPE IF NOT EXISTS shop.address",
        "CREATE TABLE IF NOT EXISTS shop.orders"]
    assert "WITH ID = 1a2b3c4d-0000-11f0-8000-000000000001" in statements[2]
    # Indexes come once the data is loaded (Cassandra builds them from it).
    assert [s.split("(")[0].strip() for s in restore_statements(DESCRIBED, DbTarget.parse("shop.orders"),
                                                                 after_load=True)] == [
        "CREATE INDEX IF NOT EXISTS orders_v ON shop.orders"]


def test_restore_statements_for_keyspace_and_other_keyspace():
    assert len(restore_statements(DESCRIBED, DbTarget.parse("shop"))) == 4
    assert len(restore_statements(DESCRIBED, DbTarget.parse("shop"), after_load=True)) == 1
    assert restore_statements(DESCRIBED, DbTarget.parse("other")) == []


COPY_SOURCE = """CREATE KEYSPACE shop WITH replication = {'class': 'SimpleStrategy', 'replication_factor': '3'};

CREATE TYPE shop.address (
    street text
);

CREATE TABLE shop.orders (
    id int PRIMARY KEY,
    addr frozen<address>
) WITH ID = 5a1c395e-b41f-11e5-9f22-ba0be0483c18
    AND bloom_filter_fp_chance = 0.01;

CREATE TABLE shop.other (
    id int PRIMARY KEY
) WITH ID = 6a1c395e-b41f-11e5-9f22-ba0be0483c18;

CREATE CUSTOM INDEX orders_idx ON shop.orders (addr) USING 'StorageAttachedIndex';
"""


def test_a_copy_gets_the_types_a_new_name_and_id_and_no_index():
    statements = copy_statements(COPY_SOURCE, DbTarget("shop", "orders"), DbTarget("scratch", "orders_copy"))
    assert [s.split("(")[0].strip() for s in statements] == [
        'CREATE TYPE IF NOT EXISTS "scratch"."address"', 'CREATE TABLE IF NOT EXISTS "scratch"."orders_copy"']
    table = statements[1]
    assert "5a1c395e" not in table and ") WITH bloom_filter_fp_chance = 0.01;" in table
    only = copy_statements(COPY_SOURCE, DbTarget("shop", "other"), DbTarget("shop", "o2"))[-1]
    assert only.endswith(") ;") and "ID =" not in only


def test_cql_identifiers_are_quoted_with_their_quotes_doubled():
    from dmf.cql import identifier, qualified
    assert identifier("Events") == '"Events"'
    assert identifier('a"b') == '"a""b"'
    assert qualified("ks", "T") == '"ks"."T"'
