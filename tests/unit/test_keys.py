from datetime import datetime, timedelta, timezone

import pytest

from dmf.core.errors import LayoutError
from dmf.core.keys import (
    MANIFEST_NAME, ObjectKey, SetKind, SetRef, catalog_key, kind_of_prefix, lease_key, leases_prefix, node_prefix,
    parse_key,
    parse_set_prefix, parse_snapshot_prefix, registry_block_key, registry_manifest_key, registry_node_key,
    registry_prefix, schema_key, set_prefix_of, sets_from, snapshot_prefix, split_table_dir, table_of, validate_relpath,
)
from dmf.core.timestamps import parse_ts

SNAP = parse_ts("20181001122613")
INCR = parse_ts("20181001124953")
CLOG = parse_ts("20181001122925")
HOST = "128.162.240.170"
HOST_ID = "4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b"
TABLE_ID = "0123456789abcdef0123456789abcdef"
DATA = f"shop/orders-{TABLE_ID}/nb-1-big-Data.db"
INDEX_DATA = f"shop/orders-{TABLE_ID}/.orders_by_email/nb-1-big-Data.db"
SEGMENT = "CommitLog-7-1538396765.log"

SNAPSHOT_PREFIX = "20181001122613/128.162.240.170/snapshots/"
INCREMENTAL_PREFIX = "20181001122613/128.162.240.170/backups/20181001124953/"
COMMITLOG_PREFIX = "20181001122613/4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b/commitlogs/20181001122925/"


@pytest.mark.parametrize("ref, prefix", [
    (SetRef.snapshot(SNAP, HOST), SNAPSHOT_PREFIX),
    (SetRef.incremental(SNAP, HOST, INCR), INCREMENTAL_PREFIX),
    (SetRef.commitlog(SNAP, HOST_ID, CLOG), COMMITLOG_PREFIX),
])
def test_spec_example_prefixes_round_trip(ref, prefix):
    assert ref.prefix == prefix
    assert ref.manifest_key == prefix + MANIFEST_NAME
    assert parse_set_prefix(prefix) == ref
    assert parse_set_prefix(prefix.rstrip("/")) == ref


def test_set_fields_and_time():
    snapshot = SetRef.snapshot(SNAP, HOST)
    assert (snapshot.kind, snapshot.node, snapshot.set_ts, snapshot.time) == (SetKind.SNAPSHOT, HOST, None, SNAP)
    incremental = SetRef.incremental(SNAP, HOST, INCR)
    assert (incremental.kind, incremental.set_ts, incremental.time) == (SetKind.INCREMENTAL, INCR, INCR)
    commitlog = SetRef.commitlog(SNAP, HOST_ID, CLOG)
    assert (commitlog.kind, commitlog.node, commitlog.time) == (SetKind.COMMITLOG, HOST_ID, CLOG)


def test_set_kind_values_are_the_folder_names():
    assert [k.value for k in SetKind] == ["snapshots", "backups", "commitlogs"]


@pytest.mark.parametrize("key, prefix, relpath", [
    (SNAPSHOT_PREFIX + DATA, SNAPSHOT_PREFIX, DATA),
    (SNAPSHOT_PREFIX + INDEX_DATA, SNAPSHOT_PREFIX, INDEX_DATA),
    (INCREMENTAL_PREFIX + DATA, INCREMENTAL_PREFIX, DATA),
    (COMMITLOG_PREFIX + SEGMENT, COMMITLOG_PREFIX, SEGMENT),
    (SNAPSHOT_PREFIX + MANIFEST_NAME, SNAPSHOT_PREFIX, MANIFEST_NAME),
    (COMMITLOG_PREFIX + MANIFEST_NAME, COMMITLOG_PREFIX, MANIFEST_NAME),
    ("20181001122613/cass-1.example.com/snapshots/" + DATA, "20181001122613/cass-1.example.com/snapshots/", DATA),
    ("20181001122613/2001:db8::7/snapshots/" + DATA, "20181001122613/2001:db8::7/snapshots/", DATA),
])
def test_parse_key_round_trips(key, prefix, relpath):
    parsed = parse_key(key)
    assert parsed.key == key
    assert parsed.set.prefix == prefix
    assert parsed.relpath == relpath
    assert parsed.is_manifest is (relpath == MANIFEST_NAME)
    assert parse_key(parsed.key) == parsed


def test_file_key_builds_what_parse_key_reads():
    ref = SetRef.incremental(SNAP, HOST, INCR)
    assert ref.file_key(DATA) == INCREMENTAL_PREFIX + DATA
    assert parse_key(ref.file_key(DATA)) == ObjectKey(ref, DATA)


def test_file_key_refuses_the_manifest():
    with pytest.raises(LayoutError, match="manifest_key"):
        SetRef.snapshot(SNAP, HOST).file_key(MANIFEST_NAME)


@pytest.mark.parametrize("ref, relpath", [
    (SetRef.snapshot(SNAP, HOST), SEGMENT),
    (SetRef.snapshot(SNAP, HOST), "../../etc/passwd"),
    (SetRef.commitlog(SNAP, HOST_ID, CLOG), DATA),
])
def test_file_key_validates_relpath_for_the_kind(ref, relpath):
    with pytest.raises(LayoutError):
        ref.file_key(relpath)


def test_object_key_validates_relpath():
    with pytest.raises(LayoutError):
        ObjectKey(SetRef.snapshot(SNAP, HOST), "../x")


@pytest.mark.parametrize("key, reason", [
    ("", "empty"),
    ("/" + SNAPSHOT_PREFIX + DATA, "absolute"),
    (SNAPSHOT_PREFIX + "shop/../../x", "'.' or '..'"),
    (SNAPSHOT_PREFIX + "./" + DATA, "'.' or '..'"),
    ("20181001122613//snapshots/" + DATA, "empty component"),
    (SNAPSHOT_PREFIX + "shop\\orders", "backslash"),
    (SNAPSHOT_PREFIX + "shop/orders\n", "control character"),
    ("2018100112261/128.162.240.170/snapshots/" + DATA, "invalid snapshot_ts '2018100112261'"),
    ("20181301122613/128.162.240.170/snapshots/" + DATA, "no such date"),
    ("20181001122613/128.162.240.170/backups/2018/" + DATA, "invalid incremental_ts '2018'"),
    ("20181001122613/4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b/commitlogs/x/" + SEGMENT, "invalid commitlog_ts"),
    ("20181001122613/host;rm/snapshots/" + DATA, "is not a host name or IP address"),
    ("20181001122613/-host/snapshots/" + DATA, "is not a host name or IP address"),
    ("20181001122613/128.162.240.170/commitlogs/20181001122925/" + SEGMENT, "is not a host ID"),
    ("20181001122613/4A1A7505-0842-4A5C-A7FC-0BAF0BB43B1B/commitlogs/20181001122925/" + SEGMENT, "is not a host ID"),
    ("20181001122613/4a1a75050842-4a5c-a7fc-0baf0bb43b1b/commitlogs/20181001122925/" + SEGMENT, "is not a host ID"),
    ("20181001122613/128.162.240.170/hints/" + DATA, "unknown folder 'hints'"),
    ("20181001122613/128.162.240.170", "expected <snapshot_ts>/<host>"),
    ("20181001122613/schema.cql", "expected <snapshot_ts>/<host>"),
    ("registry/20181001122613/blocks/x.json", "invalid snapshot_ts 'registry'"),
    ("20181001122613/128.162.240.170/backups", "must be followed by its incremental_ts folder"),
    (SNAPSHOT_PREFIX.rstrip("/"), "names a set"),
    (INCREMENTAL_PREFIX.rstrip("/"), "names a set"),
    (SNAPSHOT_PREFIX + "nb-1-big-Data.db", "is not <keyspace>/<table>-<table_id>"),
    (SNAPSHOT_PREFIX + f"shop/orders-{TABLE_ID}/a/b/c.db", "is not <keyspace>/<table>-<table_id>"),
    (COMMITLOG_PREFIX + "sub/" + SEGMENT, "is not a commit-log segment file name"),
])
def test_parse_key_rejects(key, reason):
    with pytest.raises(LayoutError) as info:
        parse_key(key)
    message = str(info.value)
    assert message.startswith("not a backup key ")
    assert reason in message
    assert "\n" not in message


@pytest.mark.parametrize("prefix, reason", [
    (SNAPSHOT_PREFIX + "shop/", "deeper than a set"),
    (INCREMENTAL_PREFIX + "x/", "deeper than a set"),
    ("20181001122613/128.162.240.170/backups/", "must be followed by its incremental_ts folder"),
    ("20181001122613/128.162.240.170/snapshots//", "empty component"),
    ("/20181001122613/128.162.240.170/snapshots/", "absolute"),
    ("20181001122613/../snapshots/", "'.' or '..'"),
    ("20181001122613/128.162.240.170/other/", "unknown folder"),
    ("", "empty"),
])
def test_parse_set_prefix_rejects(prefix, reason):
    with pytest.raises(LayoutError) as info:
        parse_set_prefix(prefix)
    assert str(info.value).startswith("not a backup set prefix ")
    assert reason in str(info.value)


@pytest.mark.parametrize("args", [
    (SNAP, HOST, SetKind.SNAPSHOT, INCR),           # a full snapshot has no second timestamp
    (SNAP, HOST, SetKind.INCREMENTAL, None),        # an increment needs one
    (SNAP, HOST_ID, SetKind.COMMITLOG, None),
    (SNAP, "not a host", SetKind.SNAPSHOT, None),
    (SNAP, HOST, SetKind.COMMITLOG, CLOG),          # commit logs are per host ID
    (SNAP, HOST, "snapshots", None),                # a plain string is not a SetKind
    ("20181001122613", HOST, SetKind.SNAPSHOT, None),
    (SNAP.replace(microsecond=5), HOST, SetKind.SNAPSHOT, None),
])
def test_set_ref_validates(args):
    with pytest.raises(LayoutError):
        SetRef(*args)


def test_set_ref_times_are_normalised_to_utc():
    naive = SetRef.snapshot(datetime(2018, 10, 1, 12, 26, 13), HOST)
    east = SetRef.snapshot(datetime(2018, 10, 1, 14, 26, 13, tzinfo=timezone(timedelta(hours=2))), HOST)
    assert naive == east == SetRef.snapshot(SNAP, HOST)
    assert naive.snapshot_ts.utcoffset() == timedelta(0)
    assert east.prefix == SNAPSHOT_PREFIX


def test_set_refs_sort_by_snapshot_time_first():
    later = SetRef.snapshot(parse_ts("20181002000000"), HOST)
    increment = SetRef.incremental(SNAP, HOST, INCR)
    assert sorted([later, increment]) == [increment, later]


@pytest.mark.parametrize("relpath", [DATA, INDEX_DATA, MANIFEST_NAME, f"shop/orders-{TABLE_ID}/manifest.json",
                                     f"shop/orders-{TABLE_ID}/schema.cql"])
def test_validate_relpath_accepts_table_files(relpath):
    assert validate_relpath(SetKind.SNAPSHOT, relpath) == relpath
    assert validate_relpath(SetKind.INCREMENTAL, relpath) == relpath


@pytest.mark.parametrize("relpath", [
    "", "shop", f"shop/orders-{TABLE_ID}", f"/shop/orders-{TABLE_ID}/f.db", f"shop/orders-{TABLE_ID}/../f.db",
    f"shop/orders-{TABLE_ID}/.hidden", f"shop/orders-{TABLE_ID}/..", f"shop/orders-{TABLE_ID}//f.db",
    f"shop/orders-{TABLE_ID}/idx/f.db", f"shop/orders-{TABLE_ID}/.bad-idx/f.db",
    f"shop/orders-{TABLE_ID}/.a/.b/f.db", f"sh-op/orders-{TABLE_ID}/f.db", "shop/orders/f.db",
    f"shop/orders-{TABLE_ID.upper()}/f.db", f"shop/orders-{TABLE_ID[:-1]}/f.db", f"shop/orders-{TABLE_ID}/f db",
    f"shop/orders-{TABLE_ID}/f\\x.db", SEGMENT,
])
def test_validate_relpath_rejects_for_sets(relpath):
    with pytest.raises(LayoutError, match="is not <keyspace>/<table>-<table_id>"):
        validate_relpath(SetKind.SNAPSHOT, relpath)


@pytest.mark.parametrize("relpath, ok", [
    (SEGMENT, True), (MANIFEST_NAME, True), ("CommitLog-7-1.log.gz", True),
    ("", False), (".", False), ("..", False), (".hidden", False), ("a/b.log", False), ("a b.log", False),
    (DATA, False),
])
def test_validate_relpath_for_commitlogs(relpath, ok):
    if ok:
        assert validate_relpath(SetKind.COMMITLOG, relpath) == relpath
    else:
        with pytest.raises(LayoutError, match="is not a commit-log segment file name"):
            validate_relpath(SetKind.COMMITLOG, relpath)


def test_split_table_dir_on_the_last_hyphen():
    assert split_table_dir(f"user_events-{TABLE_ID}") == ("user_events", TABLE_ID)


@pytest.mark.parametrize("dirname", ["users", f"-{TABLE_ID}", f"us-ers-{TABLE_ID}", "users-1234",
                                     f"users-{TABLE_ID.upper()}", f"users_{TABLE_ID}", f"users-{TABLE_ID}/"])
def test_split_table_dir_rejects(dirname):
    with pytest.raises(LayoutError, match="is not a <table>-<table_id> folder"):
        split_table_dir(dirname)


@pytest.mark.parametrize("relpath", [DATA, INDEX_DATA])
def test_table_of(relpath):
    assert table_of(relpath) == ("shop", "orders", TABLE_ID)


@pytest.mark.parametrize("relpath", [MANIFEST_NAME, SEGMENT, "shop/orders/f.db", "../" + DATA])
def test_table_of_rejects_non_table_files(relpath):
    with pytest.raises(LayoutError, match="is not a table file"):
        table_of(relpath)


def test_schema_and_registry_keys():
    assert schema_key(SNAP) == "20181001122613/schema.cql"
    assert registry_prefix(SNAP) == "registry/20181001122613/"
    assert registry_block_key(SNAP, "s3-repository", "default") == \
        "registry/20181001122613/blocks/s3-repository/default.json"
    assert registry_node_key(SNAP, HOST, "cassandra.yaml") == f"registry/20181001122613/nodes/{HOST}/cassandra.yaml"
    assert registry_manifest_key(SNAP) == "registry/20181001122613/manifest.json"
    assert schema_key(datetime(2018, 10, 1, 14, 26, 13, tzinfo=timezone(timedelta(hours=2)))) == schema_key(SNAP)


def test_catalog_index_key_is_no_set():
    assert catalog_key(SNAP) == "20181001122613/catalog.json"
    with pytest.raises(LayoutError):
        parse_key(catalog_key(SNAP))
    assert set_prefix_of(catalog_key(SNAP)) is None


@pytest.mark.parametrize("key, prefix", [
    (SNAPSHOT_PREFIX + DATA, SNAPSHOT_PREFIX),
    (SNAPSHOT_PREFIX + MANIFEST_NAME, SNAPSHOT_PREFIX),
    (INCREMENTAL_PREFIX + DATA, INCREMENTAL_PREFIX),
    (INCREMENTAL_PREFIX + "shop/orders-", INCREMENTAL_PREFIX),  # a common prefix of a '-' delimited listing
    (COMMITLOG_PREFIX + SEGMENT, COMMITLOG_PREFIX),
    (COMMITLOG_PREFIX + "CommitLog-", COMMITLOG_PREFIX),
    ("20181001122613/128.162.240.170/backups/", None),
    ("20181001122613/128.162.240.170/backups/20181001124953", None),
    ("20181001122613/128.162.240.170/snapshots", None),
    ("20181001122613/schema.cql", None),
])
def test_set_prefix_of_finds_the_set_by_position(key, prefix):
    assert set_prefix_of(key) == prefix


# What Cassandra 5.0 writes in a table folder: BIG and BTI SSTable components, SAI per-SSTable and
# per-index components (`<sstable>-SAI+<version>[+<index>]+<component>.db`), and snapshot extras.
CASSANDRA_5_NAMES = [
    "nb-1-big-Data.db", "nb-1-big-TOC.txt", "nb-1-big-Digest.crc32", "nb-1-big-Statistics.db",
    "da-3-bti-Data.db", "da-3-bti-Partitions.db", "da-3-bti-Rows.db",
    "nb-3gw0_0l1m_2ntsg2ib4ab3ilrqx1-big-Data.db",  # a UUID-based SSTable id
    "nb-1-big-SAI+aa+GroupComplete.db", "nb-1-big-SAI+aa+GroupMeta.db", "nb-1-big-SAI+aa+RowToToken.db",
    "nb-1-big-SAI+aa+PrimaryKeyTrie.db", "nb-1-big-SAI+aa+PrimaryKeyBlocks.db",
    "nb-1-big-SAI+aa+PrimaryKeyBlockOffsets.db", "nb-1-big-SAI+aa+TokenValues.db",
    "nb-1-big-SAI+aa+OffsetsValues.db",
    "nb-1-big-SAI+aa+orders_by_email+ColumnComplete.db", "nb-1-big-SAI+aa+orders_by_email+Meta.db",
    "nb-1-big-SAI+aa+orders_by_email+TermsData.db", "nb-1-big-SAI+aa+orders_by_email+PostingLists.db",
    "da-3-bti-SAI+aa+Idx_2+BalancedTree.db",
    "manifest.json", "schema.cql",
]


@pytest.mark.parametrize("name", CASSANDRA_5_NAMES)
@pytest.mark.parametrize("ref", [SetRef.snapshot(SNAP, HOST), SetRef.incremental(SNAP, HOST, INCR)])
def test_cassandra_5_file_names_round_trip(ref, name):
    for relpath in (f"shop/orders-{TABLE_ID}/{name}", f"shop/orders-{TABLE_ID}/.orders_by_email/{name}"):
        key = ref.file_key(relpath)
        assert key == ref.prefix + relpath
        assert parse_key(key) == ObjectKey(ref, relpath)
        assert table_of(relpath) == ("shop", "orders", TABLE_ID)


def test_file_names_are_bounded():
    name = "nb-1-big-SAI+aa+" + "i" * (255 - len("nb-1-big-SAI+aa++Meta.db")) + "+Meta.db"
    assert len(name) == 255
    assert validate_relpath(SetKind.SNAPSHOT, f"shop/orders-{TABLE_ID}/{name}")
    with pytest.raises(LayoutError):
        validate_relpath(SetKind.SNAPSHOT, f"shop/orders-{TABLE_ID}/i{name}")


@pytest.mark.parametrize("name", [
    "nb-1-big-SAI+aa+..+Meta.db", "nb-1-big-SAI+..", "..+aa", "nb-1-big-SAI+aa/../x+Meta.db",
    "nb-1-big-SAI+aa+idx/Meta.db", "-nb-1-big-SAI+aa+Meta.db", "+nb-1-big-SAI+aa+Meta.db", ".SAI+aa+Meta.db",
    "nb-1-big-SAI+aa+my idx+Meta.db", "nb-1-big-SAI+aa+Meta.db ", "nb-1-big-SAI+aa+\tMeta.db",
    "nb-1-big-SAI+aa+x;rm+Meta.db", "nb-1-big-SAI+aa+$HOME+Meta.db", "nb-1-big-SAI+aa+`id`+Meta.db",
    "nb-1-big-SAI+aa+'x'+Meta.db", 'nb-1-big-SAI+aa+"x"+Meta.db', "nb-1-big-SAI+aa+x\n+Meta.db",
    "nb-1-big-SAI+aa+Meta.db\n", "nb-1-big-SAI+aa+x|y+Meta.db", "nb-1-big-SAI+aa+x&+Meta.db",
    "nb-1-big-SAI+aa+x*+Meta.db", "nb-1-big-SAI+aa+x\\y+Meta.db", "nb-1-big-SAI+aa+é+Meta.db", "+", "",
])
def test_plus_names_that_could_escape_are_refused(name):
    for kind, relpath in ((SetKind.SNAPSHOT, f"shop/orders-{TABLE_ID}/{name}"),
                          (SetKind.INCREMENTAL, f"shop/orders-{TABLE_ID}/.orders_by_email/{name}"),
                          (SetKind.COMMITLOG, name)):
        with pytest.raises(LayoutError):
            validate_relpath(kind, relpath)


def test_snapshot_and_node_prefixes_are_formatted_and_parsed_here():
    assert snapshot_prefix(SNAP) == "20181001122613/"
    assert node_prefix(SNAP, HOST) == f"20181001122613/{HOST}/" and SetRef.snapshot(SNAP, HOST).prefix.startswith(
        node_prefix(SNAP, HOST))
    assert parse_snapshot_prefix("20181001122613/") == SNAP
    assert [parse_snapshot_prefix(p) for p in ("registry/", "leases/", "2018100112261/")] == [None, None, None]
    assert [kind_of_prefix(f"{node_prefix(SNAP, HOST)}{k}/") for k in ("snapshots", "backups", "commitlogs", "x")] == [
        SetKind.SNAPSHOT, SetKind.INCREMENTAL, SetKind.COMMITLOG, None]
    listing = f"{node_prefix(SNAP, HOST)}backups/"
    assert sets_from(listing, INCR) == listing + "20181001124953" and sets_from(listing, None) == ""
    # StartAfter the bound: the set of `start` itself sorts after it (its prefix goes on with '/').
    assert SetRef.incremental(SNAP, HOST, INCR).prefix > sets_from(listing, INCR)


def test_lease_keys_live_under_the_clusters_slug():
    assert lease_key("Test Cluster", SNAP, "tok") == f"{leases_prefix('Test Cluster')}20181001122613-tok.json"
    assert leases_prefix("Test Cluster").startswith("leases/Test_Cluster-")


def test_flows_reach_the_bucket_through_the_repository_only():
    """No raw bytes in or out of the bucket in a flow: the repository (and its key layout) is the door."""
    import dmf.flows
    from pathlib import Path

    for source in Path(dmf.flows.__path__[0]).glob("*.py"):
        text = source.read_text()
        assert "get_bytes(" not in text and "put_bytes(" not in text, source.name
