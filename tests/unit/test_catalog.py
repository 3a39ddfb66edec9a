"""Catalog grouping, completeness, the seed's rule and snapshot-chain resolution."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from dmf.core.catalog import Catalog, SetInfo, covers, resolve_chain
from dmf.core.errors import LayoutError
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.targets import DbTarget

HOSTS = ("10.0.0.1", "10.0.0.2")
IDS = {"10.0.0.1": "4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b", "10.0.0.2": "5b2b8616-1953-4b6d-b8ad-1cbf1cc54c2c"}
SHA = "ab" * 32


def ts(s: str) -> datetime:
    return datetime.strptime(s, "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)


def manifest(ref: SetRef, host: str, target: str = "ks.t", hosts=HOSTS) -> Manifest:
    return Manifest(set=ref, files=(FileEntry("ks/t-" + "0" * 32 + "/nb-1-big-Data.db", 10, SHA),),
                    host=host, host_id=IDS[host], created_at=ref.time, db_target=target, hosts=hosts)


def full(at: str, *, target="ks.t", hosts=HOSTS, missing=()) -> list[SetInfo]:
    out = []
    for h in hosts:
        ref = SetRef.snapshot(ts(at), h)
        out.append(SetInfo(ref, None if h in missing else manifest(ref, h, target, hosts)))
    return out


def incr(snap: str, at: str, *, target="ks.t", hosts=HOSTS, missing=()) -> list[SetInfo]:
    out = []
    for h in hosts:
        ref = SetRef.incremental(ts(snap), h, ts(at))
        out.append(SetInfo(ref, None if h in missing else manifest(ref, h, target, hosts)))
    return out


def commitlog(snap: str, at: str, host: str = "10.0.0.1") -> list[SetInfo]:
    ref = SetRef.commitlog(ts(snap), IDS[host], ts(at))
    return [SetInfo(ref, manifest(ref, host, "", (host,)))]


def test_groups_and_completeness():
    catalog = Catalog.build([*full("20250101000000"), *full("20250102000000", missing={"10.0.0.2"})])
    assert [g.complete for g in catalog.fulls] == [True, False]
    assert catalog.fulls[0].files == 2 and catalog.fulls[0].bytes == 20


def test_seed_rule_needs_same_target_and_hosts():
    catalog = Catalog.build([*full("20250101000000"), *full("20250102000000", target="ks")])
    assert catalog.latest_full_for_backup(DbTarget.parse("ks.t"), HOSTS).snapshot_ts == ts("20250101000000")
    assert catalog.latest_full_for_backup(DbTarget.parse("ks"), HOSTS).snapshot_ts == ts("20250102000000")
    assert catalog.latest_full_for_backup(DbTarget.parse("ks.t"), HOSTS[:1]) is None
    assert catalog.latest_full_for_backup(DbTarget.parse("other"), HOSTS) is None


def test_incomplete_full_is_never_chosen():
    catalog = Catalog.build(full("20250101000000", missing={"10.0.0.1"}))
    assert catalog.latest_full_for_backup(DbTarget.parse("ks.t"), HOSTS) is None
    assert resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20990101000000")) is None


@pytest.mark.parametrize("taken,wanted,expected", [
    ("", "ks.t", True), ("ks", "ks.t", True), ("ks.t", "ks.t", True), ("ks.t", "ks.u", False),
    ("ks", "other.t", False), ("ks.t", "ks", False), ("", "ks", True),
])
def test_covers(taken, wanted, expected):
    assert covers(taken, DbTarget.parse(wanted)) is expected


def test_chain_picks_latest_full_and_increments_up_to_time():
    catalog = Catalog.build([
        *full("20250101000000"),
        *incr("20250101000000", "20250101010000"),
        *incr("20250101000000", "20250101020000", missing={"10.0.0.2"}),  # incomplete: skipped
        *incr("20250101000000", "20250101030000"),
        *full("20250102000000"),
    ])
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101033000"))
    assert chain.full.snapshot_ts == ts("20250101000000")
    assert [g.time for g in chain.increments] == [ts("20250101010000"), ts("20250101030000")]
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101015959"))
    assert [g.time for g in chain.increments] == [ts("20250101010000")]
    assert resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250102000000")).full.snapshot_ts == ts("20250102000000")
    assert resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20241231235959")) is None


def test_chain_commitlogs_include_first_batch_after_time():
    catalog = Catalog.build([
        *full("20250101000000"),
        *commitlog("20241231000000", "20241231120000"),  # before the full: not needed
        *commitlog("20250101000000", "20250101001000"),
        *commitlog("20250101000000", "20250101002000"),  # first after --time: may hold earlier writes
        *commitlog("20250101000000", "20250101003000"),  # later still: not needed
        *commitlog("20250101000000", "20250101002000", host="10.0.0.2"),
    ])
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101001500"))
    got = sorted((next(iter(g.sets)), g.time) for g in chain.commitlogs)
    assert got == [(IDS["10.0.0.1"], ts("20250101001000")), (IDS["10.0.0.1"], ts("20250101002000")),
                   (IDS["10.0.0.2"], ts("20250101002000"))]


def test_manifest_round_trip_and_validation():
    ref = SetRef.incremental(ts("20250101000000"), "10.0.0.1", ts("20250101010000"))
    m = manifest(ref, "10.0.0.1")
    assert Manifest.from_json(m.to_json(), expected=ref) == m
    other = SetRef.incremental(ts("20250101000000"), "10.0.0.2", ts("20250101010000"))
    with pytest.raises(LayoutError, match="another set"):
        Manifest.from_json(m.to_json(), expected=other)
    tampered = m.to_json().replace(b"nb-1-big-Data.db", b"../../etc/passwd")
    with pytest.raises(LayoutError):
        Manifest.from_json(tampered)
    with pytest.raises(LayoutError, match="malformed"):
        Manifest.from_json(b"{not json")
