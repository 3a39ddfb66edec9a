import pytest

from dmf.core.errors import InputError
from dmf.core.paths import check_commitlog_archive_dir, is_within

HOST = "10.0.0.1"


@pytest.mark.parametrize("path, directory, within", [
    ("/a/commitlog", "/a/commitlog", True),
    ("/a/commitlog/archive", "/a/commitlog", True),
    ("/a/commitlog/x/y", "/a/commitlog/", True),
    ("/a/commitlog/../commitlog/archive", "/a/commitlog", True),
    ("//a/commitlog", "/a/commitlog", True),
    ("/a/x", "/", True),
    ("/a/commitlog_archive", "/a/commitlog", False),
    ("/a/commitlog", "/a/commitlog/archive", False),
    ("/a/commitlog/../archive", "/a/commitlog", False),
    ("/b/commitlog", "/a/commitlog", False),
])
def test_is_within(path, directory, within):
    assert is_within(path, directory) is within


@pytest.mark.parametrize("commitlog_dir, archive_dir", [
    ("/a/commitlog", "/a/commitlog"),                   # equal
    ("/a/commitlog", "/a/commitlog/"),                  # trailing slash
    ("/a/commitlog/", "/a/commitlog//"),
    ("/a/commitlog", "/a/commitlog/archive"),           # archive inside the commit logs
    ("/a/commitlog/live", "/a/commitlog"),              # commit logs inside the archive
    ("/a/commitlog", "/a/other/../commitlog"),          # '..' segments
    ("/a/b/../commitlog", "/a/commitlog/./archive"),
    ("/var/lib/cassandra", "/"),
])
def test_overlapping_commitlog_dirs_are_refused(commitlog_dir, archive_dir):
    with pytest.raises(InputError) as info:
        check_commitlog_archive_dir(HOST, commitlog_dir, archive_dir)
    message = str(info.value)
    assert HOST in message and repr(commitlog_dir) in message and repr(archive_dir) in message
    assert "\n" not in message


@pytest.mark.parametrize("commitlog_dir, archive_dir", [
    ("/a/commitlog", "/a/commitlog_archive"),           # a common prefix is not nesting
    ("/a/commitlog_archive", "/a/commitlog"),
    ("/a/commitlog", "/a/commitlog-archive/"),
    ("/var/lib/cassandra/commitlog", "/var/lib/cassandra/commitlog_archive"),
    ("/a/commitlog/../x", "/a/commitlog"),
])
def test_separate_commitlog_dirs_are_accepted(commitlog_dir, archive_dir):
    check_commitlog_archive_dir(HOST, commitlog_dir, archive_dir)


def test_cassandra_host_refuses_an_archive_dir_inside_the_commit_logs():
    from dmf.blocks.cassandra_cluster import CassandraCluster, CassandraHost

    with pytest.raises(InputError, match="host 10.0.0.1: commitlog_archive_dir '/a/commitlog/archive'"):
        CassandraHost(address=HOST, commitlog_dir="/a/commitlog", commitlog_archive_dir="/a/commitlog/archive")
    with pytest.raises(InputError, match="overlaps commitlog_dir"):
        CassandraCluster.model_validate({"hosts": [{"address": HOST, "commitlog_dir": "/a/commitlog/",
                                                    "commitlog_archive_dir": "/a/commitlog"}]})
    host = CassandraHost(address=HOST, commitlog_dir="/a/commitlog", commitlog_archive_dir="/a/commitlog_archive")
    assert host.commitlog_archive_dir == "/a/commitlog_archive"
    assert CassandraHost(address=HOST).commitlog_archive_dir == "/var/lib/cassandra/commitlog_archive"
