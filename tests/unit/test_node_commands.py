"""The node-side commands a backup's fixed cost depends on, run here through a local shell: nodetool's
JVM options, a snapshot removed without nodetool, one listing for a snapshot and its backups/ files,
compression with its sizes in one command, and the node agent started ahead of its files."""
from __future__ import annotations

import gzip
import hashlib
import shlex
import subprocess

import pytest

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.errors import InputError
from dmf.core.keys import SetRef
from dmf.core.targets import DbTarget
from dmf.core.timestamps import parse_ts
from dmf.node import NODETOOL_JAVA_OPTIONS, Node, check_snapshot_tag, with_java_options
from dmf.node_upload import EarlyAgent
from dmf.ssh import CommandResult, RemoteError, RemoteHost, redact

TABLE_DIR = "t-" + "0" * 32
LIVE = (f"ks/{TABLE_DIR}",)


class LocalHost(RemoteHost):
    """A RemoteHost whose commands run on this machine (argv as given, no login shell), its errors masked
    as RemoteHost.run masks them."""

    def run(self, argv, *, check=True, timeout=600, stdin=None, shown=None, secrets=()):
        done = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout)
        result = CommandResult(tuple(argv), done.returncode, done.stdout.decode(), done.stderr.decode())
        if check and done.returncode:
            raise RemoteError(f"`{redact(shlex.join(shown or argv), secrets)}` exited {done.returncode}: "
                              f"{redact(result.stderr.strip(), secrets)}")
        return result


def node(*data_dirs) -> Node:
    block = CassandraCluster(hosts=[{"address": "10.0.0.1", "data_dirs": [str(d) for d in data_dirs]}])
    return Node(LocalHost(block, block.hosts[0]))


def touch(path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("node_own, expected", [(None, NODETOOL_JAVA_OPTIONS),
                                                ("-Djavax.net.ssl.trustStore=/x", f"-Djavax.net.ssl.trustStore=/x "
                                                                                  f"{NODETOOL_JAVA_OPTIONS}")])
def test_nodetool_options_come_after_the_nodes_own_and_the_arguments_pass_intact(node_own, expected):
    env = {"PATH": "/usr/bin:/bin", **({"JAVA_TOOL_OPTIONS": node_own} if node_own else {})}
    argv = with_java_options(["sh", "-c", 'printf "%s|" "$JAVA_TOOL_OPTIONS" "$@"', "sh", "a b", "$HOME", "'"])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    assert out == f"{expected}|a b|$HOME|'|"


def test_a_snapshot_is_removed_as_folders_in_every_data_dir_and_nothing_else(tmp_path, monkeypatch):
    one, two = tmp_path / "d1", tmp_path / "d2"
    for data in (one, two):
        touch(data / "ks" / TABLE_DIR / "snapshots" / "dmf-20260101000000" / "nb-1-big-Data.db")
        touch(data / "ks" / TABLE_DIR / "snapshots" / "dmf-20260101000000" / ".idx" / "nb-1-big-Data.db")
        touch(data / "ks" / TABLE_DIR / "snapshots" / "mine" / "nb-1-big-Data.db")
        touch(data / "ks" / TABLE_DIR / "backups" / "dmf-20260101000000" / "f")  # not a snapshot folder
        touch(data / "ks" / TABLE_DIR / "nb-1-big-Data.db")
    monkeypatch.setattr(Node, "clear_snapshot", lambda self, tag: pytest.fail("nodetool was not needed"))
    node(one, two).remove_snapshot("dmf-20260101000000")
    for data in (one, two):
        left = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
        assert left == [f"ks/{TABLE_DIR}/backups/dmf-20260101000000/f", f"ks/{TABLE_DIR}/nb-1-big-Data.db",
                        f"ks/{TABLE_DIR}/snapshots/mine/nb-1-big-Data.db"]


def test_a_snapshot_that_cannot_be_removed_as_folders_is_cleared_by_nodetool(tmp_path, monkeypatch):
    cleared = []
    monkeypatch.setattr(Node, "clear_snapshot", lambda self, tag: cleared.append(tag))
    node(tmp_path / "missing").remove_snapshot("dmf-20260101000000")
    assert cleared == ["dmf-20260101000000"]


@pytest.mark.parametrize("tag", ["", "*", "dmf-*", "a/b", "..", ".x", "[a]", "a?"])
def test_a_tag_that_find_would_read_as_a_pattern_or_path_is_refused(tag):
    with pytest.raises(InputError):
        check_snapshot_tag(tag)


def test_a_snapshot_and_the_backups_files_come_from_one_listing(tmp_path, monkeypatch):
    data = tmp_path / "data"
    table = data / "ks" / TABLE_DIR
    touch(table / "snapshots" / "dmf-1" / "nb-2-big-Data.db", b"ab")
    touch(table / "snapshots" / "dmf-1" / ".idx" / "nb-2-big-Data.db")
    touch(table / "snapshots" / "dmf-1" / "manifest.json")
    touch(table / "snapshots" / "other" / "nb-1-big-Data.db")
    touch(table / "backups" / "nb-2-big-Data.db", b"ab")
    touch(data / "system" / f"local-{'1' * 32}" / "backups" / "nb-1-big-Data.db")
    n = node(data)
    listings = []
    original = n.remote.list_files
    monkeypatch.setattr(n.remote, "list_files", lambda d: listings.append(d) or original(d))
    snapshot, backups = n.snapshot_and_backup_files("dmf-1", DbTarget.parse(None), LIVE)
    assert listings == [str(data)]
    assert sorted(f.relpath for f in snapshot) == [f"ks/{TABLE_DIR}/.idx/nb-2-big-Data.db",
                                                   f"ks/{TABLE_DIR}/manifest.json", f"ks/{TABLE_DIR}/nb-2-big-Data.db"]
    assert [(f.relpath, f.size) for f in backups] == [(f"ks/{TABLE_DIR}/nb-2-big-Data.db", 2)]
    assert (snapshot, backups) == (n.snapshot_files("dmf-1", DbTarget.parse(None), LIVE),
                                   n.backup_files(DbTarget.parse(None), LIVE))


def test_the_folder_a_dropped_table_of_the_same_name_left_is_not_the_tables(tmp_path):
    """DROP TABLE leaves `<table>-<old id>/` with its backups/ (and the drop's snapshot); CREATE TABLE of
    the same name makes `<table>-<new id>/`. The old folder's rows must not reach the new table's sets,
    where a restore would bring them back. A dropped table whose name is not in use again keeps
    reaching the next incremental (its last flushes are in no set yet)."""
    data = tmp_path / "data"
    earlier = data / "ks" / f"t-{'e' * 32}"
    touch(earlier / "backups" / "nb-3-big-Data.db")
    touch(earlier / "snapshots" / "dmf-1" / "nb-3-big-Data.db")
    touch(data / "ks" / TABLE_DIR / "backups" / "nb-1-big-Data.db")
    touch(data / "ks" / TABLE_DIR / "snapshots" / "dmf-1" / "nb-1-big-Data.db")
    touch(data / "ks" / f"gone-{'d' * 32}" / "backups" / "nb-7-big-Data.db")
    snapshot, backups = node(data).snapshot_and_backup_files("dmf-1", DbTarget.parse("ks"), LIVE)
    assert [f.relpath for f in snapshot] == [f"ks/{TABLE_DIR}/nb-1-big-Data.db"]
    assert sorted(f.relpath for f in backups) == [f"ks/gone-{'d' * 32}/nb-7-big-Data.db",
                                                  f"ks/{TABLE_DIR}/nb-1-big-Data.db"]
    assert len(node(data).backup_files(DbTarget.parse("ks"), ())) == 3  # no table of that name now: all are kept


def test_segments_are_compressed_hashed_and_sized_in_one_command(tmp_path):
    paths = []
    for i, body in enumerate([b"a" * 5000, b"", b"xyz" * 999]):
        path = tmp_path / f"CommitLog-7-{i}.log"
        path.write_bytes(body)
        paths.append(str(path))
    sha256s, sizes = node(tmp_path).compress_segments(paths)
    for path in paths:
        body = open(path, "rb").read()  # kept beside its copy
        assert sha256s[path] == hashlib.sha256(body).hexdigest()
        assert gzip.decompress(open(f"{path}.gz", "rb").read()) == body
        assert sizes[f"{path}.gz"] == len(open(f"{path}.gz", "rb").read())
    assert len(sizes) == len(paths)


def test_an_agent_that_could_not_start_early_is_not_handed_over(monkeypatch):
    block = CassandraCluster(hosts=[{"address": "10.0.0.1"}])

    def refused(self):
        raise RemoteError("cannot connect")
    monkeypatch.setattr(RemoteHost, "connect", refused)
    early = EarlyAgent(block, block.hosts[0], storage=None, set_ref=SetRef.snapshot(parse_ts("20260101000000"),
                                                                                        "10.0.0.1"))
    assert early.take() is None
    early.close()
