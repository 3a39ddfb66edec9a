"""The node path's pure decisions: shares, the ring check, the fallback for keys that stay on the
worker, each node's room, the worker's own fetches, the ETA."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dmf.core.manifest import PlainFile
from dmf.core.node_restore import (NodeFile, NodeShare, Room, disk_shortfalls, eta_seconds, node_fetch_refusal,
                                   node_import_refusal, node_shares, token_mismatches, worker_fetches)

ROOT = Path("/restore")
GIB = 2**30


@dataclass(frozen=True)
class F:
    key: str
    dest: Path
    size: int
    sha256: str = "0" * 64
    plain: PlainFile | None = None


@dataclass(frozen=True)
class U:
    host: str
    set_name: str
    keyspace: str
    table: str
    directory: Path


def unit(host: str, set_name: str = "full") -> U:
    return U(host, set_name, "ks", "t", ROOT / "20240501T000000Z" / host / set_name / "ks" / "t")


def fetch(u: U, name: str, size: int) -> F:
    return F(f"key/{u.host}/{u.set_name}/{name}", u.directory / name, size)


def test_each_host_stages_its_own_files_and_imports_only_sstables():
    a, a_incr, b = unit("10.0.0.1"), unit("10.0.0.1", "incr-20240502T000000Z"), unit("10.0.0.2")
    fetches = [fetch(a, "nb-1-big-Data.db", 100), fetch(a, "nb-1-big-TOC.txt", 1), fetch(a, "schema.cql", 5),
               fetch(a, ".idx/nb-1-big-Data.db", 7), fetch(a_incr, "nb-2-big-Data.db", 30),
               fetch(b, "nb-1-big-Data.db", 200)]
    shares = node_shares(fetches, [a, a_incr, b], ROOT)
    assert set(shares) == {"10.0.0.1", "10.0.0.2"}
    first = shares["10.0.0.1"]
    assert first.bytes == 143 and shares["10.0.0.2"].bytes == 200
    assert first.files[0].path == "20240501T000000Z/10.0.0.1/full/ks/t/nb-1-big-Data.db"
    assert first.files[0].key == "key/10.0.0.1/full/nb-1-big-Data.db"
    assert [u.names for u in first.units] == [("nb-1-big-Data.db", "nb-1-big-TOC.txt"), ("nb-2-big-Data.db",)]
    assert first.units[0].directory == "20240501T000000Z/10.0.0.1/full/ks/t"
    assert first.units[0].import_directory == ".import/20240501T000000Z/10.0.0.1/full/ks/t"


def test_the_ring_must_own_the_backup_tokens_and_hosts_name_every_node():
    backup = {"10.0.0.1": ("-5", "10"), "10.0.0.2": ("20",)}
    assert token_mismatches(backup, {"10.0.0.1": ("10", "-5"), "10.0.0.2": ("20",)}) == []
    assert token_mismatches(backup, {"10.0.0.1": ("10",), "10.0.0.3": ("20",)}) == [
        "10.0.0.1 owns other tokens now", "10.0.0.2 is not in this ring"]
    ring = {"10.0.0.1": ("-5", "10"), "10.0.0.2": ("20",)}
    assert node_import_refusal(backup, ring, ["10.0.0.1", "10.0.0.2"]) is None
    assert node_import_refusal(backup, ring, ["10.0.0.1"]) == "HOSTS leave out 10.0.0.2, whose files must load somewhere"
    assert node_import_refusal(backup, {**ring, "10.0.0.2": ("21",)}, ["10.0.0.1", "10.0.0.2"]) == (
        "the ring does not own the backup's tokens (10.0.0.2 owns other tokens now)")


def test_keys_that_stay_on_the_worker_send_every_node_the_worker_path():
    assert node_fetch_refusal(False, None, False) is None
    assert node_fetch_refusal(True, None, False) == (
        "the backup is encrypted client-side and the key stays on the worker (decrypt_on_nodes is off)")
    assert "SSE-C" in node_fetch_refusal(False, "SSE-C", False)
    assert node_fetch_refusal(False, "SSE-C", True) is None
    # decrypt_on_nodes hands the nodes the client-side key; SSE-C's is its own setting's.
    assert node_fetch_refusal(True, None, False, decrypt_on_nodes=True) is None
    assert "SSE-C" in node_fetch_refusal(True, "SSE-C", False, decrypt_on_nodes=True)


def test_an_encrypted_file_is_staged_decrypted():
    a = unit("10.0.0.1")
    sealed = F("key/a/nb-1-big-Data.db", a.directory / "nb-1-big-Data.db", 3 * GIB, "1" * 64,
               PlainFile(2 * GIB, "2" * 64))
    [staged] = node_shares([sealed], [a], ROOT)["10.0.0.1"].files
    assert staged.plain == PlainFile(2 * GIB, "2" * 64) and (staged.size, staged.staged_size) == (3 * GIB, 2 * GIB)
    share = NodeShare("a", (staged, NodeFile("k", "s/y", GIB, "0" * 64)))
    assert (share.bytes, share.staged_bytes) == (4 * GIB, 3 * GIB)  # fetched from S3; held in the staging folder
    assert disk_shortfalls({"a": Room(free=3 * GIB, present=0)}, {"a": share}) == []
    assert disk_shortfalls({"a": Room(free=2 * GIB, present=0)}, {"a": share}) == [
        "a has 2.00 GiB free for its staging folder and needs 3.00 GiB"]


def test_a_node_needs_room_for_what_it_has_not_staged_yet():
    shares = {h: NodeShare(h, (NodeFile("k", "s/x", 3 * GIB, "0" * 64),), ()) for h in ("a", "b")}
    assert disk_shortfalls({"a": Room(free=2 * GIB, present=1 * GIB), "b": Room(free=3 * GIB, present=0)}, shares) == []
    assert disk_shortfalls({"a": Room(free=2 * GIB, present=0)}, shares) == [
        "a has 2.00 GiB free for its staging folder and needs 3.00 GiB"]


def test_the_worker_fetches_the_fallback_hosts_files_and_every_schema():
    a, b = unit("10.0.0.1"), unit("10.0.0.2")
    fetches = [fetch(a, "nb-1-big-Data.db", 1), fetch(a, "schema.cql", 1), fetch(b, "nb-1-big-Data.db", 1),
               fetch(b, "schema.cql", 1)]
    shares = node_shares(fetches, [a, b], ROOT)
    assert worker_fetches(fetches, [shares["10.0.0.2"]], ROOT) == fetches[1:]
    assert worker_fetches(fetches, [], ROOT) == [fetches[1], fetches[3]]


def test_eta_from_the_rate_so_far():
    assert eta_seconds(0, 100, 5.0) is None
    assert eta_seconds(25, 100, 5.0) == 15.0
    assert eta_seconds(100, 100, 5.0) == 0.0
