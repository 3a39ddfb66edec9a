import pytest

from dmf.core.errors import InputError
from dmf.core.targets import SYSTEM_KEYSPACES, DbTarget, is_identifier, parse_hosts


@pytest.mark.parametrize("name, expected", [
    ("users", True), ("User_2", True), ("_", True), ("a" * 48, True),
    ("", False), ("a" * 49, False), ("my-ks", False), ("ks.t", False), ("ks t", False), ("ks\n", False),
    ("é", False),
])
def test_is_identifier(name, expected):
    assert is_identifier(name) is expected


def test_system_keyspaces():
    assert SYSTEM_KEYSPACES == {
        "system", "system_schema", "system_auth", "system_distributed", "system_traces", "system_views",
        "system_virtual_schema", "system_cluster_metadata"}


@pytest.mark.parametrize("value, expected", [
    ("128.162.240.170", ("128.162.240.170",)),
    ("10.0.0.2, 10.0.0.1 ,cass-3.example.com", ("10.0.0.2", "10.0.0.1", "cass-3.example.com")),
    ("::1,2001:db8::7", ("::1", "2001:db8::7")),
    ("localhost", ("localhost",)),
    (["10.0.0.1", " node2 "], ("10.0.0.1", "node2")),
    (("a" * 63 + "." + "b" * 63,), ("a" * 63 + "." + "b" * 63,)),
])
def test_parse_hosts_keeps_order(value, expected):
    assert parse_hosts(value) == expected


@pytest.mark.parametrize("value, fragment", [
    ("", "expected comma-separated host names"),
    ("  ", "expected comma-separated host names"),
    ([], "expected comma-separated host names"),
    (None, "expected comma-separated host names"),
    ("a,,b", "empty item"),
    ("a,", "empty item"),
    ("a,b,a", "'a' is given more than once"),
    ("Node1,node1", "given more than once"),
    ("::1,0:0::1", "given more than once"),
    ("a;b", "'a;b' is not a host name or IP address"),
    ("a b", "is not a host name"),
    ("'a'", "is not a host name"),
    ('"a"', "is not a host name"),
    ("a/b", "is not a host name"),
    ("$(reboot)", "is not a host name"),
    ("a|b", "is not a host name"),
    ("a&b", "is not a host name"),
    ("`a`", "is not a host name"),
    ("-oProxyCommand=x", "is not a host name"),
    ("host-", "is not a host name"),
    ("a..b", "is not a host name"),
    ("a" * 64, "is not a host name"),
    (".".join(["a" * 63] * 4), "is not a host name"),  # 255 characters
    ("10.0.0.256", "is not a host name"),
    ("fe80::1%eth0", "is not a host name"),
    ("fe80::1%a;b", "is not a host name"),
    ("ho\nst", "is not a host name"),
    (["10.0.0.1", None], "'None' is not a host name"),
])
def test_parse_hosts_rejects(value, fragment):
    with pytest.raises(InputError) as info:
        parse_hosts(value)
    assert str(info.value).startswith("invalid HOSTS")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_parse_hosts_message_names_the_bad_item():
    with pytest.raises(InputError) as info:
        parse_hosts("a;b")
    assert str(info.value) == "invalid HOSTS 'a;b': 'a;b' is not a host name or IP address"


@pytest.mark.parametrize("value, expected, text", [
    (None, DbTarget(), ""),
    ("", DbTarget(), ""),
    ("shop", DbTarget("shop"), "shop"),
    ("shop.orders", DbTarget("shop", "orders"), "shop.orders"),
    ("Shop_2.Orders_v1", DbTarget("Shop_2", "Orders_v1"), "Shop_2.Orders_v1"),
])
def test_db_target_parse_and_str_round_trip(value, expected, text):
    target = DbTarget.parse(value)
    assert target == expected
    assert str(target) == text
    assert DbTarget.parse(str(target)) == target


@pytest.mark.parametrize("value", ["a.b.c", "a..b", ".t", "ks.", ".", "my-ks", "ks.t t", "ks;drop", "a" * 49,
                                   "ks/../t", " ks"])
def test_db_target_rejects_malformed(value):
    with pytest.raises(InputError, match=r"^invalid DB_TARGET .*: expected keyspace or keyspace\.table"):
        DbTarget.parse(value)


def test_db_target_message():
    with pytest.raises(InputError) as info:
        DbTarget.parse("a.b.c")
    assert str(info.value) == "invalid DB_TARGET 'a.b.c': expected keyspace or keyspace.table"


@pytest.mark.parametrize("value", ["system", "system_auth.roles", "System_Schema", "system_cluster_metadata"])
def test_db_target_rejects_system_keyspaces(value):
    with pytest.raises(InputError, match="system keyspaces are not backed up"):
        DbTarget.parse(value)


@pytest.mark.parametrize("keyspace, table", [(None, "orders"), ("", None), ("ks", ""), ("bad-ks", None),
                                             ("system", None)])
def test_db_target_built_directly_is_validated_too(keyspace, table):
    with pytest.raises(InputError, match="^invalid DB_TARGET"):
        DbTarget(keyspace, table)


@pytest.mark.parametrize("target, keyspace, table, expected", [
    ("", "shop", "orders", True),
    ("", "system", "local", False),
    ("", "system_auth", "roles", False),
    ("shop", "shop", "orders", True),
    ("shop", "shop", "items", True),
    ("shop", "other", "orders", False),
    ("shop.orders", "shop", "orders", True),
    ("shop.orders", "shop", "items", False),
    ("shop.orders", "other", "orders", False),
])
def test_covers(target, keyspace, table, expected):
    assert DbTarget.parse(target).covers(keyspace, table) is expected


@pytest.mark.parametrize("target, nodetool, keyspace_table", [
    ("", [], []),
    ("shop", ["shop"], ["shop"]),
    ("shop.orders", ["-kt", "shop.orders"], ["shop", "orders"]),
])
def test_command_arguments(target, nodetool, keyspace_table):
    parsed = DbTarget.parse(target)
    assert parsed.nodetool_args() == nodetool
    assert parsed.keyspace_table_args() == keyspace_table
