"""The long-lived shipper's pure decisions (dmf.core.shipper)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dmf.core.errors import LayoutError
from dmf.core.keys import heartbeat_key
from dmf.core.shipper import (Heartbeat, batch_time, end_of_life, lag, lag_flags, recovery_point, seal_due,
                              shipper_lease_name, to_ship)
from dmf.core.keys import leases_prefix

T0 = datetime(2026, 12, 4, 3, 0, 0, tzinfo=timezone.utc)
HOST_ID = "4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_batch_is_sealed_on_its_cadence_or_when_full():
    assert not seal_due(None, 0, 100.0)
    assert not seal_due(100.0, 0, 200.0)  # nothing in it
    assert not seal_due(100.0, 3, 101.9, seal_every_s=2)
    assert seal_due(100.0, 1, 102.0, seal_every_s=2)
    assert seal_due(100.0, 64, 100.0, seal_every_s=2, max_segments=64)


def test_batch_times_never_repeat_within_a_second():
    first = batch_time(at(0.4), None)
    assert first == T0
    assert batch_time(at(0.9), first) == at(1)      # same second: the next one
    assert batch_time(at(0.2), at(5)) == at(6)      # a clock stepped back: still later
    assert batch_time(at(7.5), at(1)) == at(7)


def test_a_run_hands_over_at_the_schedule_tick_after_its_lifetime():
    assert end_of_life(at(10), 3600) == at(3660)    # 04:00:10 → the 04:01:00 tick
    assert end_of_life(at(0), 3600) == at(3600)     # already on a tick
    assert end_of_life(at(10.5), 5, tick_s=1) == at(16)


def test_a_successor_deletes_what_is_sealed_and_ships_the_rest():
    archived = [("CommitLog-7-1.log", 100), ("CommitLog-7-2.log", 100), ("CommitLog-7-3.log", 100)]
    # 1 sealed by the dead run; 2 sealed with another size (a different file by that name): shipped again.
    done, pending = to_ship(archived, {"CommitLog-7-1.log": 100, "CommitLog-7-2.log": 50})
    assert done == ["CommitLog-7-1.log"] and pending == ["CommitLog-7-2.log", "CommitLog-7-3.log"]
    assert to_ship([], {"CommitLog-7-1.log": 100}) == ([], [])


def test_the_recovery_point_waits_for_the_oldest_unsealed_segment():
    assert recovery_point(None, [], []) is None
    assert recovery_point(None, [at(1), at(3)], []) == at(3)
    assert recovery_point(None, [at(1), at(3)], [at(2)]) == at(1)  # 2 is not sealed: writes after 1 may be lost
    assert recovery_point(at(5), [at(1)], []) == at(5)             # never moves back
    assert recovery_point(at(5), [], [at(6)]) == at(5)
    assert recovery_point(at(5), [at(8)], [at(9)]) == at(8)


def beat(point: datetime | None, beat_at: datetime = T0) -> Heartbeat:
    return Heartbeat("127.0.0.1", HOST_ID, beat_at, point, 0, "flow run x", at(3600))


def test_lag_and_its_flags():
    assert lag(at(30), beat(at(20))) == timedelta(seconds=10)
    assert lag(at(30), beat(None)) is None
    assert lag(at(30), beat(at(40))) == timedelta(0)  # the node's clock ahead of ours
    assert lag_flags(at(10), beat(at(5), at(9))) == []
    flags = lag_flags(at(400), beat(at(50), at(200)), threshold=timedelta(seconds=300))
    assert flags == ["shipper silent for 200 s", "recovery point 350 s behind (threshold 300 s)"]


def test_heartbeat_round_trip_and_refusal():
    original = beat(at(20), at(25))
    key = heartbeat_key("Test Cluster", HOST_ID)
    assert key.startswith("shipper/Test_Cluster-") and key.endswith(f"/{HOST_ID}.json")
    assert Heartbeat.from_json(key, original.to_json()) == original
    assert Heartbeat.from_json(key, beat(None).to_json()).recovery_point is None
    with pytest.raises(LayoutError):
        Heartbeat.from_json(key, b'{"host": "x"}')
    with pytest.raises(LayoutError):
        heartbeat_key("Test Cluster", "../x")


def test_the_shipper_lease_is_not_the_clusters():
    assert leases_prefix(shipper_lease_name("Test Cluster")) != leases_prefix("Test Cluster")


def test_status_shows_each_nodes_lag_from_the_heartbeat_and_flags_it():
    from dmf.core.catalog import Catalog
    from dmf.core.status import Schedule, status, status_markdown

    fresh = Heartbeat("127.0.0.1", HOST_ID, at(100), at(95), 0, "run a", at(3600))
    behind = Heartbeat("127.0.0.2", "5b1a7505-0842-4a5c-a7fc-0baf0bb43b1b", at(99), at(-419), 2, "run a", at(3600))
    report = status(Catalog.build([]), [], [], at(101), Schedule(), [behind, fresh])
    first, second = report["shippers"]
    assert (first["host"], first["lag"], first["flags"]) == ("127.0.0.1", "6 s", [])
    assert second["lag"] == "8.7 min" and second["unsealed"] == 2
    assert "commit-log shipper on 127.0.0.2: recovery point 520 s behind (threshold 300 s)" in report["problems"]
    assert "| 127.0.0.2 | 20261204025301 | 8.7 min |" in status_markdown(report)


def test_a_cdc_prefix_is_shipped_when_it_grew_at_most_every_few_seconds():
    from dmf.core.shipper import prefix_due
    assert prefix_due(4096, 0, False, None, 100.0)
    assert not prefix_due(4096, 4096, False, 90.0, 100.0)            # nothing new
    assert not prefix_due(8192, 4096, False, 99.0, 100.0, every_s=3)  # too soon
    assert prefix_due(8192, 4096, False, 97.0, 100.0, every_s=3)
    assert not prefix_due(8192, 0, True, None, 100.0)                # closed: archived whole, shipped so


def test_the_longest_sealed_copy_of_a_segment_supersedes_the_others():
    from dmf.core.shipper import keep_longest
    copies = [("n1", "CommitLog-7-5.log", 4096, "batch 1"), ("n1", "CommitLog-7-5.log", 9000, "batch 2"),
              ("n2", "CommitLog-7-5.log", 100, "batch 2"), ("n1", "CommitLog-7-5.log", 8192, "batch 3"),
              ("n1", "CommitLog-7-6.log", 10, "batch 3")]
    kept = keep_longest(copies, key=lambda c: (c[0], c[1]), size=lambda c: c[2])
    assert kept == [copies[1], copies[2], copies[4]]
    assert keep_longest([], key=lambda c: c, size=len) == []


def test_a_restore_fetches_the_longest_sealed_copy_of_each_segment():
    from pathlib import Path

    from dmf.core.catalog import SEGMENTS_CLOSED_AT, Catalog, SetInfo, resolve_chain
    from dmf.core.keys import SetRef
    from dmf.core.manifest import FileEntry, Manifest
    from dmf.core.targets import DbTarget
    from dmf.restore_plan import plan_restore

    from .test_catalog import IDS, SHA, full, ts

    def batch(shipped: str, sizes: dict[str, int]) -> SetInfo:
        ref = SetRef.commitlog(ts("20250101120000"), IDS["10.0.0.1"], ts(shipped))
        return SetInfo(ref, Manifest(set=ref, files=tuple(FileEntry(n, size, SHA) for n, size in sizes.items()),
                                     host="10.0.0.1", host_id=IDS["10.0.0.1"], created_at=ts(shipped),
                                     hosts=("10.0.0.1",), extra={SEGMENTS_CLOSED_AT: dict.fromkeys(sizes, shipped)}))

    catalog = Catalog.build([*full("20250101120000"),
                             batch("20250101120100", {"CommitLog-7-1.log": 4096}),              # a CDC prefix
                             batch("20250101120103", {"CommitLog-7-1.log": 12288}),             # a longer one
                             batch("20250101120106", {"CommitLog-7-1.log": 8192, "CommitLog-7-2.log": 5})])
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), ts("20250101130000"))
    fetches = plan_restore(chain, DbTarget.parse("ks.t"), Path("/restore"), with_commitlogs=True).commitlog_fetches
    assert [(f.dest.name, f.size, f.key.split("/")[3]) for f in fetches] == [
        ("CommitLog-7-1.log", 12288, "20250101120103"), ("CommitLog-7-2.log", 5, "20250101120106")]


def test_cdc_raw_is_drained_once_a_sealed_copy_holds_the_completed_segment():
    from dmf.core.shipper import drainable
    cdc = {"CommitLog-7-1.log": (900, True), "CommitLog-7-2.log": (500, False), "CommitLog-7-3.log": (700, True),
           "CommitLog-7-4.log": (800, True)}
    sealed = {"CommitLog-7-1.log": 1048576, "CommitLog-7-2.log": 1048576, "CommitLog-7-3.log": 400,
              "CommitLog-7-4.log": 800}
    # 2 is still written; 3's sealed copy is a shorter prefix; 4's final prefix holds it all.
    assert drainable(cdc, sealed) == ["CommitLog-7-1.log", "CommitLog-7-4.log"]


def test_a_restore_takes_batches_past_its_time_until_one_holds_a_later_write():
    """A continuous shipper seals, after the restore time, a CDC prefix read at a sync before it: the
    writes of the seconds before the restore time come in a later batch, which the chain must hold."""
    from dmf.core.catalog import SEGMENTS_CLOSED_AT, Catalog, SetInfo, resolve_chain
    from dmf.core.keys import SetRef
    from dmf.core.manifest import FileEntry, Manifest
    from dmf.core.targets import DbTarget

    from .test_catalog import IDS, SHA, full, ts

    def batch(shipped: str, closed: str | None) -> SetInfo:
        ref = SetRef.commitlog(ts("20250101120000"), IDS["10.0.0.1"], ts(shipped))
        return SetInfo(ref, Manifest(set=ref, files=(FileEntry("CommitLog-7-1.log", 5, SHA),), host="10.0.0.1",
                                     host_id=IDS["10.0.0.1"], created_at=ts(shipped), hosts=("10.0.0.1",),
                                     extra={SEGMENTS_CLOSED_AT: {"CommitLog-7-1.log": closed}} if closed else {}))

    at = ts("20250101121000")
    catalog = Catalog.build([*full("20250101120000"),
                             batch("20250101121001", "20250101120955"),   # after `at`, durable before it
                             batch("20250101121009", "20250101121005"),   # holds writes up to 12:10:05
                             batch("20250101121020", "20250101121015")])
    chain = resolve_chain(catalog, DbTarget.parse("ks.t"), at)
    assert [g.time for g in chain.commitlogs] == [ts("20250101121001"), ts("20250101121009")]
    # Batches without close times (shipped before they were recorded): the first after `at` ends it.
    old = Catalog.build([*full("20250101120000"), batch("20250101121001", None), batch("20250101121009", None)])
    assert [g.time for g in resolve_chain(old, DbTarget.parse("ks.t"), at).commitlogs] == [ts("20250101121001")]
