"""What a restore fetches: the chain's files, and only the commit-log segments that can matter."""
from __future__ import annotations

from pathlib import Path

import gzip
import hashlib

import pytest

from dmf.core.catalog import SEGMENTS_CLOSED_AT, Catalog, SetInfo, resolve_chain
from dmf.core.errors import LayoutError
from dmf.core.keys import SetRef
from dmf.core.segments import SEGMENTS_COMPRESSED, compressed_record
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.targets import DbTarget
from dmf.download import Unpack, unpack_all
from dmf.restore_plan import COMMITLOG_DIR, plan_restore
from dmf.storage import VerificationError

from .test_catalog import IDS, SHA, full, ts

ROOT = Path("/restore")


def batch(snap: str, shipped: str, closed: dict[str, str | None]) -> SetInfo:
    """A commit-log batch of 10.0.0.1; a None close time is a segment of a batch from before they were recorded."""
    ref = SetRef.commitlog(ts(snap), IDS["10.0.0.1"], ts(shipped))
    recorded = {name: at for name, at in closed.items() if at is not None}
    return SetInfo(ref, Manifest(set=ref, files=tuple(FileEntry(name, 5, SHA) for name in closed),
                                 host="10.0.0.1", host_id=IDS["10.0.0.1"], created_at=ts(shipped),
                                 hosts=("10.0.0.1",), extra={SEGMENTS_CLOSED_AT: recorded} if recorded else {}))


def segments(catalog: Catalog, at: str) -> list[str]:
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts(at))
    return [f.dest.name for f in plan_restore(chain, DbTarget.parse("ks.t"), ROOT, with_commitlogs=True)
            .commitlog_fetches]


def test_segments_closed_well_before_the_snapshot_are_not_fetched():
    # Shipped after the snapshot, but one segment closed an hour before it: its writes are in the snapshot.
    catalog = Catalog.build([*full("20250101120000"), batch("20250101120000", "20250101120500", {
        "CommitLog-7-1.log": "20250101110000", "CommitLog-7-2.log": "20250101115955",
        "CommitLog-7-3.log": "20250101120400"})])
    assert segments(catalog, "20250101130000") == ["CommitLog-7-2.log", "CommitLog-7-3.log"]


def test_segments_without_a_close_time_are_kept():
    catalog = Catalog.build([*full("20250101120000"), batch("20250101120000", "20250101120500", {
        "CommitLog-7-1.log": None})])
    assert segments(catalog, "20250101130000") == ["CommitLog-7-1.log"]


def test_chain_files_land_under_snapshot_host_and_set():
    catalog = Catalog.build(full("20250101120000"))
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101130000"))
    plan = plan_restore(chain, DbTarget.parse("ks.t"), ROOT, with_commitlogs=False)
    assert sorted(str(f.dest) for f in plan.fetches) == [
        f"/restore/20250101120000/{h}/full/ks/t/nb-1-big-Data.db" for h in ("10.0.0.1", "10.0.0.2")]
    assert plan.commitlog_fetches == [] and plan.bytes == 20


def test_into_loads_the_same_files_as_another_table():
    catalog = Catalog.build(full("20250101120000"))
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101130000"))
    plan = plan_restore(chain, DbTarget.parse("ks.t"), ROOT, with_commitlogs=False, into=DbTarget("ks2", "copy"))
    assert sorted(str(f.dest) for f in plan.fetches) == [
        f"/restore/20250101120000/{h}/full/ks2/copy/nb-1-big-Data.db" for h in ("10.0.0.1", "10.0.0.2")]
    assert {(u.keyspace, u.table, u.directory.parts[-2:]) for u in plan.units} == {("ks2", "copy", ("ks2", "copy"))}
    assert {f.key for f in plan.fetches} == {f.key for f in plan_restore(chain, DbTarget.parse("ks.t"), ROOT,
                                                                         with_commitlogs=False).fetches}


def compressed_batch(snap: str, shipped: str, records: dict) -> SetInfo:
    ref = SetRef.commitlog(ts(snap), IDS["10.0.0.1"], ts(shipped))
    return SetInfo(ref, Manifest(set=ref, files=tuple(FileEntry(name, 3, "cd" * 32) for name in records),
                                 host="10.0.0.1", host_id=IDS["10.0.0.1"], created_at=ts(shipped),
                                 hosts=("10.0.0.1",), extra={SEGMENTS_COMPRESSED: records}))


def test_compressed_segments_are_fetched_then_given_back_under_their_own_name():
    catalog = Catalog.build([*full("20250101120000"), compressed_batch("20250101120000", "20250101120500", {
        "CommitLog-7-1.log.gz": compressed_record("CommitLog-7-1.log", 10, SHA)})])
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101130000"))
    plan = plan_restore(chain, DbTarget.parse("ks.t"), ROOT, with_commitlogs=True)
    folder = ROOT / COMMITLOG_DIR / IDS["10.0.0.1"]
    assert [(f.dest, f.size, f.sha256) for f in plan.commitlog_fetches] == [(folder / "CommitLog-7-1.log.gz", 3,
                                                                             "cd" * 32)]
    assert plan.segments == [folder / "CommitLog-7-1.log"]
    assert plan.unpacks == [Unpack(folder / "CommitLog-7-1.log.gz", folder / "CommitLog-7-1.log", 10, SHA)]


@pytest.mark.parametrize("record", [
    compressed_record("../../etc/passwd", 10, SHA),          # would become a path outside PATH
    compressed_record("CommitLog-7-2.log", 10, SHA),         # not the segment of this stored file
    compressed_record("CommitLog-7-1.log", -1, SHA),
    compressed_record("CommitLog-7-1.log", 10, "not a sha"),
    "CommitLog-7-1.log",
])
def test_a_malformed_compression_record_is_refused(record):
    catalog = Catalog.build([*full("20250101120000"), compressed_batch("20250101120000", "20250101120500", {
        "CommitLog-7-1.log.gz": record})])
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101130000"))
    with pytest.raises(LayoutError, match="malformed compression record"):
        plan_restore(chain, DbTarget.parse("ks.t"), ROOT, with_commitlogs=True)


def test_unpack_gives_back_the_exact_segment_and_refuses_a_damaged_one(tmp_path):
    segment = bytes(range(256)) * 4096 + b"\0" * 100_000
    folder = tmp_path / "h"
    folder.mkdir(mode=0o700)
    (folder / "CommitLog-7-1.log.gz").write_bytes(gzip.compress(segment))
    unpack = Unpack(folder / "CommitLog-7-1.log.gz", folder / "CommitLog-7-1.log", len(segment),
                    hashlib.sha256(segment).hexdigest())
    assert unpack_all(tmp_path, [unpack]) == 1
    assert (folder / "CommitLog-7-1.log").read_bytes() == segment
    assert not (folder / "CommitLog-7-1.log.gz").exists()
    assert (folder / "CommitLog-7-1.log").stat().st_mode & 0o777 == 0o600
    assert unpack_all(tmp_path, [unpack]) == 0  # a rerun keeps the verified segment

    damaged = bytearray(gzip.compress(segment))
    damaged[len(damaged) // 2] ^= 0xFF
    (folder / "CommitLog-7-2.log.gz").write_bytes(bytes(damaged))
    bad = Unpack(folder / "CommitLog-7-2.log.gz", folder / "CommitLog-7-2.log", len(segment),
                 hashlib.sha256(segment).hexdigest())
    with pytest.raises(VerificationError, match="CommitLog-7-2.log.gz"):
        unpack_all(tmp_path, [bad])
    assert sorted(p.name for p in folder.iterdir()) == ["CommitLog-7-1.log", "CommitLog-7-2.log.gz"]


def sstables_of(at: str, host: str, files: list[str], increment: str | None = None) -> SetInfo:
    """`files` below the table's folder, or with a folder of their own (`t-<id>/<file>`)."""
    ref = SetRef.incremental(ts(at), host, ts(increment)) if increment else SetRef.snapshot(ts(at), host)
    paths = [f"ks/{name}" if name.startswith("t-") else f"ks/t-{'0' * 32}/{name}" for name in files]
    return SetInfo(ref, Manifest(set=ref, files=tuple(FileEntry(path, 10, SHA) for path in paths),
                                 host=host, host_id=IDS[host], created_at=ref.time, db_target="ks.t",
                                 hosts=("10.0.0.1", "10.0.0.2")))


def test_one_loader_folder_per_table_with_every_set_under_fresh_generations():
    """Every host's and set's SSTables of a table are linked into one <keyspace>/<table> folder, so one
    sstableloader streams them all; generations are renumbered so equal ones never collide, and each
    SSTable's components keep one generation."""
    uuid_id = "3gxb_0vpo_2z2pc2h8c5ljywr9d8"
    catalog = Catalog.build([
        sstables_of("20250101120000", "10.0.0.1", ["nb-1-big-Data.db", "nb-1-big-TOC.txt", "nb-2-big-Data.db",
                                                   "nb-1-big-SAI+aa+RowToToken.db", "manifest.json",
                                                   "schema.cql", ".idx/nb-1-big-Data.db"]),
        sstables_of("20250101120000", "10.0.0.2", ["nb-1-big-Data.db", f"da-{uuid_id}-bti-Data.db",
                                                   f"da-{uuid_id}-bti-Partitions.db"]),
        sstables_of("20250101120000", "10.0.0.1", ["nb-3-big-Data.db"], increment="20250101123000"),
        sstables_of("20250101120000", "10.0.0.2", ["nb-1-big-Data.db"], increment="20250101123000")])
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101130000"))
    plan = plan_restore(chain, DbTarget.parse("ks.t"), ROOT, with_commitlogs=False)
    [load] = plan.tables
    assert (load.keyspace, load.table, load.sets) == ("ks", "t", 4)
    assert load.directory == ROOT / "20250101120000" / ".load" / "ks" / "t"
    links = {str(source.relative_to(ROOT / "20250101120000")): name for source, name in load.links}
    full1, full2 = "10.0.0.1/full/ks/t", "10.0.0.2/full/ks/t"
    incr1, incr2 = "10.0.0.1/incr-20250101123000/ks/t", "10.0.0.2/incr-20250101123000/ks/t"
    assert links == {
        f"{full1}/nb-1-big-Data.db": "nb-1-big-Data.db", f"{full1}/nb-1-big-TOC.txt": "nb-1-big-TOC.txt",
        f"{full1}/nb-1-big-SAI+aa+RowToToken.db": "nb-1-big-SAI+aa+RowToToken.db",
        f"{full1}/nb-2-big-Data.db": "nb-2-big-Data.db",
        f"{full2}/da-{uuid_id}-bti-Data.db": "da-3-bti-Data.db",
        f"{full2}/da-{uuid_id}-bti-Partitions.db": "da-3-bti-Partitions.db",
        f"{full2}/nb-1-big-Data.db": "nb-4-big-Data.db",
        f"{incr1}/nb-3-big-Data.db": "nb-5-big-Data.db",
        f"{incr2}/nb-1-big-Data.db": "nb-6-big-Data.db"}
    # The links are below PATH too: removed with the downloads after a successful restore.
    assert {load.directory / name for _, name in load.links} <= set(plan.load_links)
    assert load.describe() == "ks.t (4 table sets)"


def test_into_loads_every_set_into_the_copy_from_one_folder():
    catalog = Catalog.build(full("20250101120000"))
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101130000"))
    plan = plan_restore(chain, DbTarget.parse("ks.t"), ROOT, with_commitlogs=False, into=DbTarget.parse("ks.copy"))
    [load] = plan.tables
    assert load.directory.parts[-2:] == ("ks", "copy")
    assert sorted(name for _, name in load.links) == ["nb-1-big-Data.db", "nb-2-big-Data.db"]


def test_an_increments_files_of_an_earlier_table_of_the_same_name_are_left_out_and_said():
    """A backup taken before dmf told a table's folders apart: the increment holds, beside the table's
    own folder, the one a dropped table of the same name left. Restored, its rows came back into the
    table; the full's folder is the table's, the other is left out with a warning."""
    earlier = "e" * 32
    catalog = Catalog.build([
        sstables_of("20250101120000", "10.0.0.1", ["nb-1-big-Data.db"]),
        sstables_of("20250101120000", "10.0.0.2", ["nb-1-big-Data.db"]),
        sstables_of("20250101120000", "10.0.0.1", ["nb-2-big-Data.db", f"t-{earlier}/nb-3-big-Data.db",
                                                   f"t-{earlier}/nb-3-big-TOC.txt"], increment="20250101123000"),
        sstables_of("20250101120000", "10.0.0.2", ["nb-5-big-Data.db"], increment="20250101123000")])
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101130000"))
    plan = plan_restore(chain, DbTarget.parse("ks.t"), ROOT, with_commitlogs=False)
    assert sorted(str(f.dest.relative_to(ROOT / "20250101120000")) for f in plan.fetches) == [
        "10.0.0.1/full/ks/t/nb-1-big-Data.db", "10.0.0.1/incr-20250101123000/ks/t/nb-2-big-Data.db",
        "10.0.0.2/full/ks/t/nb-1-big-Data.db", "10.0.0.2/incr-20250101123000/ks/t/nb-5-big-Data.db"]
    assert plan.left_out == (f"10.0.0.1: 2 file(s) of ks/t-{earlier} left out: an earlier table of that name, "
                             f"dropped (the full holds ks/t-{'0' * 32})",)

