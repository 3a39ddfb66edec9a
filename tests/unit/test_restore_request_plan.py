"""The restore's plan, from the request, the chain and the ring as read: every check made before any
byte moves, and the per-node shares, load units and load mode the flow's steps take."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dmf.core.catalog import Catalog, resolve_chain
from dmf.core.client_encryption import Expected
from dmf.core.errors import InputError, PermanentError
from dmf.core.manifest import PlainFile
from dmf.core.restore_checks import RingNode
from dmf.core.restore_request import RestoreRequest
from dmf.encryption import SCHEME, expected
from dmf.restore_plan import place, plan_files, plan_restore_request

from .test_catalog import IDS, full, incr, ts
from .test_restore_plan import batch

ROOT = Path("/restore")
RING = {a: RingNode(a, True, "dc1") for a in ("10.0.0.1", "10.0.0.2")}
HOST_IDS = {a: IDS[a] for a in RING}
SCHEMA = ("CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc_old': '2'} "
          "AND durable_writes = true;\nCREATE TABLE ks.t (id int PRIMARY KEY);\n")


def request(hosts="10.0.0.1,10.0.0.2", target="ks.t", **options) -> RestoreRequest:
    return RestoreRequest.parse(hosts, str(ROOT), target, **options)


def placement(req: RestoreRequest, ring=RING, keyspaces=("ks",), resuming=(), tokens=None):
    # The backup's manifests (test_catalog) record no tokens: a ring owning none is the same ring.
    return place(req, ring, HOST_IDS, keyspaces, {h: {h} for h in req.hosts}, resuming,
                 tokens={a: () for a in ring} if tokens is None else tokens, versions={"4.1.5"})


def chain(catalog=None, at="20250101130000"):
    return resolve_chain(catalog or Catalog.build([*full("20250101120000"), *incr("20250101120000", "20250101123000")]),
                         request().target, ts(at))


def plan(req: RestoreRequest | None = None, stored_schema=None, keyspaces=("ks",), key: Expected = expected(None)):
    req = req or request()
    where = placement(req, keyspaces=keyspaces)
    files = plan_files(req, ROOT, chain(), where, key)
    return plan_restore_request(req, ts("20250101130000"), ROOT, chain(), where, files, stored_schema)


def test_hosts_are_placed_on_their_ring_addresses_and_host_ids():
    where = placement(request())
    assert where.ring_address == {"10.0.0.1": "10.0.0.1", "10.0.0.2": "10.0.0.2"} and where.host_ids == HOST_IDS


def test_a_host_outside_the_ring_is_refused_before_anything_is_resolved():
    with pytest.raises(InputError, match="HOSTS: 10.0.0.9 is not in the cluster's ring"):
        placement(request("10.0.0.1,10.0.0.9"))


def test_a_down_host_passes_only_when_an_interrupted_replay_left_it_restarting():
    ring = {**RING, "10.0.0.2": RingNode("10.0.0.2", False, "dc1")}
    with pytest.raises(InputError, match="10.0.0.2 is down"):
        placement(request(), ring=ring)
    assert placement(request(), ring=ring, resuming=["10.0.0.2"]).ring_address["10.0.0.2"] == "10.0.0.2"


def test_into_needs_an_existing_keyspace():
    with pytest.raises(InputError, match="--into ks2.copy: keyspace ks2 does not exist in this cluster"):
        placement(request(into="ks2.copy"))


def test_a_full_of_part_of_the_ring_is_refused_unless_allowed():
    ring = {**RING, "10.0.0.3": RingNode("10.0.0.3", True, "dc1")}
    req = request()
    with pytest.raises(InputError, match="taken on 2 of this cluster's 3 nodes"):
        plan_files(req, ROOT, chain(), placement(req, ring=ring), expected(None))
    allowed = request(allow_host_subset=True)
    assert plan_files(allowed, ROOT, chain(), placement(allowed, ring=ring), expected(None)).fetches


def test_a_backup_without_the_target_is_refused():
    req = request(target="ks.other")
    with pytest.raises(InputError, match="the backup 20250101120000 holds no file of ks.other"):
        plan_files(req, ROOT, chain(), placement(req), expected(None))


def test_manifests_not_sealed_under_the_repositorys_key_are_refused_before_downloading():
    with pytest.raises(PermanentError, match="10.0.0.1/snapshots/ is not client-side encrypted"):
        plan(key=Expected(SCHEME, "some-key-id", b"k" * 32))


def test_a_replay_on_the_nodes_needs_a_host_of_hosts_with_each_segments_host_id():
    catalog = Catalog.build([*full("20250101120000"), batch("20250101120000", "20250101120500",
                                                            {"CommitLog-7-1.log": None})])
    only_two = request("10.0.0.2", replay_commitlogs=True, replay_on="nodes")
    where = placement(only_two)
    with pytest.raises(InputError, match=f"commit logs of host ID\\(s\\) {IDS['10.0.0.1']} are needed"):
        plan_files(only_two, ROOT, chain(catalog), where, expected(None))
    both = request(replay_commitlogs=True, replay_on="nodes")
    assert len(plan_files(both, ROOT, chain(catalog), placement(both), expected(None)).segments) == 1
    # A scratch Cassandra (the default) replays every node's segments on the worker: any HOSTS will do.
    in_scratch = request("10.0.0.2", replay_commitlogs=True)
    assert len(plan_files(in_scratch, ROOT, chain(catalog), placement(in_scratch), expected(None)).segments) == 1


def test_the_scratch_replay_is_a_step_of_the_plan_and_the_nodes_replay_another():
    assert plan(request(replay_commitlogs=True)).replays_in_scratch
    on_nodes = plan(request(replay_commitlogs=True, replay_on="nodes"))
    assert not on_nodes.replays_in_scratch and on_nodes.request.replays_on_nodes
    assert not plan(request(get_commitlogs=True)).replays_in_scratch
    assert placement(request()).versions == frozenset({"4.1.5"})


def test_node_mode_into_another_ring_or_without_every_backup_host_streams_from_the_nodes():
    node = request(mode="node")
    where = placement(node, tokens={"10.0.0.1": (), "10.0.0.2": ("42",)})
    other_ring = plan_restore_request(node, ts("20250101130000"), ROOT, chain(), where,
                                      plan_files(node, ROOT, chain(), where, expected(None)), None)
    assert other_ring.load_mode == "node-sstableloader"
    assert ("node path: the ring does not own the backup's tokens (10.0.0.2 owns other tokens now), so the nodes "
            "cannot import their own files: each of 10.0.0.1, 10.0.0.2 fetches a share of them from S3 and streams "
            "it with sstableloader (one per table)") in other_ring.notes
    # Each host's full and increment (one SSTable each, 10 bytes): balanced, two SSTables per node.
    shares = other_ring.node_fetches
    assert {h: len(s.files) for h, s in shares.items()} == {"10.0.0.1": 2, "10.0.0.2": 2}
    assert other_ring.loads == 2  # one sstableloader per table per node
    one = request("10.0.0.1", mode="node", allow_host_subset=True)
    subset = plan(one)
    assert subset.load_mode == "node-sstableloader" and list(subset.node_fetches) == ["10.0.0.1"]
    assert "HOSTS leave out 10.0.0.2" in subset.notes[0]


def worker_only(req: RestoreRequest, tokens=None, encrypted=True, **repository) -> object:
    """The plan of a backup whose files are client-side encrypted (or not), under the repository's SSE."""
    where = placement(req, tokens=tokens)
    files = plan_files(req, ROOT, chain(), where, expected(None))
    if encrypted:
        files = replace(files, fetches=[replace(f, plain=PlainFile(f.size - 1, "0" * 64)) for f in files.fetches])
    return plan_restore_request(req, ts("20250101130000"), ROOT, chain(), where, files, None, **repository)


def test_the_default_is_the_node_path():
    default = plan()
    assert default.request.mode == "node" and default.load_mode == "node"
    assert len(default.node_fetches) == 2 and len(default.notes) == 1  # only the summary line: nothing to explain


def test_a_key_that_stays_on_the_worker_takes_the_default_to_the_worker_path_and_says_why():
    client = worker_only(request())
    assert client.load_mode == "import" and client.loads == 4  # each host's own files, imported from the worker
    assert client.notes[0] == (
        "node path: the backup is encrypted client-side and the key stays on the worker (decrypt_on_nodes is off), "
        "so no node fetches its own files: the worker downloads every file into PATH and places each host's files "
        "on it with nodetool import (the worker path, as --mode import)")
    # Into another topology the worker streams them, as it streams any topology.
    other = worker_only(request(), tokens={"10.0.0.1": (), "10.0.0.2": ("42",)})
    assert other.load_mode == "sstableloader" and other.notes[0].endswith(
        "the worker downloads every file into PATH and streams them with sstableloader (the worker path, as "
        "--mode sstableloader)")
    # SSE-C's customer key likewise, unless the repository lets the nodes hold it.
    sse_c = worker_only(request(), encrypted=False, sse="SSE-C")
    assert sse_c.load_mode == "import" and "sse_c_key_on_nodes is off" in sse_c.notes[0]
    assert worker_only(request(), encrypted=False, sse="SSE-C", sse_c_key_on_nodes=True).load_mode == "node"
    assert worker_only(request(), encrypted=False, sse="aws:kms").load_mode == "node"
    # decrypt_on_nodes lets the nodes decrypt: each stages its own share, told what it decrypts to.
    decrypting = worker_only(request(), decrypt_on_nodes=True)
    assert decrypting.load_mode == "node" and len(decrypting.notes) == 1
    staged = [f for share in decrypting.node_fetches.values() for f in share.files]
    assert staged and all(f.plain == PlainFile(f.size - 1, "0" * 64) for f in staged)
    into_other = worker_only(request(), tokens={"10.0.0.1": (), "10.0.0.2": ("42",)}, decrypt_on_nodes=True)
    assert into_other.load_mode == "node-sstableloader"
    assert all(f.plain is not None for share in into_other.node_fetches.values() for f in share.files)
    # A worker mode asked for is kept as it is, with nothing to explain.
    for mode in ("sstableloader", "import"):
        kept = worker_only(request(mode=mode))
        assert kept.load_mode == mode and len(kept.notes) == 1


def test_node_mode_gives_each_node_its_share_to_fetch_and_stage():
    restore = plan(request(mode="node"))
    assert restore.load_mode == "node" and restore.loads == 4  # a nodetool import per table set
    shares = restore.node_fetches
    assert {h: [f.path for f in share.files] for h, share in shares.items()} == {
        h: [f"20250101120000/{h}/full/ks/t/nb-1-big-Data.db",
            f"20250101120000/{h}/incr-20250101123000/ks/t/nb-1-big-Data.db"] for h in ("10.0.0.1", "10.0.0.2")}
    assert {h: [u.directory for u in share.units] for h, share in shares.items()} == {
        h: [f"20250101120000/{h}/full/ks/t", f"20250101120000/{h}/incr-20250101123000/ks/t"]
        for h in ("10.0.0.1", "10.0.0.2")}


def test_the_keyspace_is_created_with_the_replication_fitted_to_this_cluster():
    renamed = plan(request(restore_schema=True, dc_map="dc_old:dc1"), SCHEMA, keyspaces=())
    assert "'dc1': 2}" in renamed.schema and "dc_old" not in renamed.schema
    assert renamed.notes[0].startswith("keyspace ks will be created with replication")
    with pytest.raises(InputError, match="dc_old"):
        plan(request(restore_schema=True), SCHEMA, keyspaces=())


def test_an_existing_keyspace_keeps_its_replication_and_says_the_rewrite_is_unused():
    kept = plan(request(restore_schema=True, dc_map="dc_old:dc1"), SCHEMA)
    assert kept.schema == SCHEMA
    assert kept.warnings == ("keyspace ks exists in this cluster: its replication is kept, --dc-map/--replication "
                             "unused",)


def test_import_needs_every_backup_host_among_hosts():
    with pytest.raises(InputError, match="--mode import places each host's own files on it: HOSTS must include "
                                         "10.0.0.2"):
        plan(request("10.0.0.1", mode="import", allow_host_subset=True))


def test_the_plan_gives_each_node_its_share_and_the_load_its_units():
    restore = plan(request(mode="import"))
    assert restore.load_mode == "import" and restore.tables == ["ks.t"]
    assert {host: [f.path for f in share.files] for host, share in restore.node_fetches.items()} == {
        h: [f"20250101120000/{h}/full/ks/t/nb-1-big-Data.db",
            f"20250101120000/{h}/incr-20250101123000/ks/t/nb-1-big-Data.db"] for h in ("10.0.0.1", "10.0.0.2")}
    assert {h: [u.set_name for u in units] for h, units in restore.import_units.items()} == {
        h: ["full", "incr-20250101123000"] for h in ("10.0.0.1", "10.0.0.2")}
    # import: per table set; sstableloader: per table
    assert restore.loads == 4 and plan(request(mode="sstableloader")).loads == 1
    assert restore.files.bytes == 40
    assert restore.notes[-1] == ("restoring ks.t at 20250101130000: full 20250101120000 + 1 increment(s), 4 files, "
                                 "0.0 MiB into /restore")
