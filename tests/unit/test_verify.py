"""backup verify's pure parts: a listing against its manifest, a re-read against its entry, the
sample, the options, the restore points damage breaks, and the report."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from dmf.core.catalog import Catalog, SetInfo
from dmf.core.errors import InputError
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import parse_window
from dmf.core.verify import (
    MANIFEST, MISSING, SHA256, SIZE, STRAY, UNSEALED, Expected, Finding, broken_restore_points, build_report, check_listing,
    check_read, check_sample, report_markdown, sample_objects, select_sets, summary_line,
)

HOSTS = ("10.0.0.1", "10.0.0.2")
IDS = {"10.0.0.1": "4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b", "10.0.0.2": "5b2b8616-1953-4b6d-b8ad-1cbf1cc54c2c"}
TABLE = "ks/t-" + "0" * 32
SHA = "ab" * 32


def ts(s: str) -> datetime:
    return datetime.strptime(s, "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)


def manifest(ref: SetRef, host: str, files=(FileEntry(f"{TABLE}/nb-1-big-Data.db", 10, SHA),), target="ks.t",
             hosts=HOSTS) -> Manifest:
    return Manifest(set=ref, files=tuple(files), host=host, host_id=IDS[host], created_at=ref.time,
                    db_target=target, hosts=hosts)


def full(at: str, missing=()) -> list[SetInfo]:
    refs = [(SetRef.snapshot(ts(at), h), h) for h in HOSTS]
    return [SetInfo(ref, None if h in missing else manifest(ref, h)) for ref, h in refs]


def incr(snap: str, at: str, missing=()) -> list[SetInfo]:
    refs = [(SetRef.incremental(ts(snap), h, ts(at)), h) for h in HOSTS]
    return [SetInfo(ref, None if h in missing else manifest(ref, h)) for ref, h in refs]


def batch(snap: str, at: str, host: str) -> list[SetInfo]:
    ref = SetRef.commitlog(ts(snap), IDS[host], ts(at))
    return [SetInfo(ref, manifest(ref, host, (FileEntry("CommitLog-7-1.log", 10, SHA),), "", (host,)))]


S1, S2 = "20250101000000", "20250102000000"
CATALOG = Catalog.build([
    *full(S1),
    *incr(S1, "20250101010000"),
    *incr(S1, "20250101020000"),
    *incr(S1, "20250101023000", missing={"10.0.0.2"}),  # incomplete: no restore uses it
    *incr(S1, "20250101030000"),
    *batch(S1, "20250101001000", "10.0.0.1"),
    *batch(S1, "20250101002000", "10.0.0.1"),
    *batch(S1, "20250101033000", "10.0.0.1"),
    *batch(S1, "20250101034000", "10.0.0.2"),
    *full(S2),
    *incr(S2, "20250102010000"),
    *full("20250103000000", missing={"10.0.0.1"}),
    *incr("20250103000000", "20250103010000"),  # complete, on an incomplete full
])


def test_listing_against_manifest_names_missing_wrong_size_and_strays():
    ref = SetRef.snapshot(ts(S1), "10.0.0.1")
    files = [FileEntry(f"{TABLE}/nb-1-big-{c}.db", n, SHA) for c, n in (("Data", 10), ("Index", 20), ("Summary", 30))]
    m = manifest(ref, "10.0.0.1", files)
    listing = [(ref.file_key(files[0].path), 10), (ref.file_key(files[1].path), 19), (ref.manifest_key, 900),
               (ref.prefix + "ks/t-" + "0" * 32 + "/leftover", 5)]
    findings, whole = check_listing(m, listing)
    assert findings == [Finding(ref, ref.file_key(files[1].path), SIZE, "size 19 expected 20"),
                        Finding(ref, ref.file_key(files[2].path), MISSING, "missing"),
                        Finding(ref, ref.prefix + "ks/t-" + "0" * 32 + "/leftover", STRAY, "stray: not in the manifest")]
    assert [f.damage for f in findings] == [True, True, False]
    assert whole == [Expected(ref, ref.file_key(files[0].path), 10, SHA)]
    assert check_listing(m, [(ref.file_key(f.path), f.size) for f in files]) == \
        ([], [Expected(ref, ref.file_key(f.path), f.size, SHA) for f in files])


def test_reread_object_against_its_entry():
    expected = Expected(SetRef.snapshot(ts(S1), "10.0.0.1"), "k", 10, SHA)
    assert check_read(expected, 10, SHA) is None
    assert check_read(expected, 10, "cd" * 32) == Finding(expected.set, "k", SHA256, "sha256 mismatch")
    assert check_read(expected, 9, SHA) == Finding(expected.set, "k", SIZE, "size 9 expected 10")


def test_sample_is_a_deterministic_fraction_whatever_the_order():
    ref = SetRef.snapshot(ts(S1), "10.0.0.1")
    objects = [Expected(ref, f"k{i:03d}", 1, SHA) for i in range(100)]
    drawn = sample_objects(objects, 0.1, seed=7)
    assert len(drawn) == 10 and drawn == sample_objects(list(reversed(objects)), 0.1, seed=7)
    assert drawn != sample_objects(objects, 0.1, seed=8)
    assert len(sample_objects(objects, 0.001, seed=1)) == 1  # a fraction of anything re-reads something
    assert sample_objects(objects, 1.0, seed=1) == objects == sample_objects(objects, None, None)


def test_window_and_sample_options():
    assert parse_window("20250101000000", 20250102000000) == (ts(S1), ts(S2))
    assert parse_window(None, "") == (None, None)
    with pytest.raises(InputError, match="--start-time 20250102000000 is after --end-time 20250101000000"):
        parse_window(S2, S1)
    assert check_sample(None) is None and check_sample(1) == 1 and check_sample(0.1) == 0.1
    for bad in (0, -0.5, 1.01, float("nan"), True, "0.5"):
        with pytest.raises(InputError, match="0 < F <= 1"):
            check_sample(bad)


def test_selection_follows_backup_list_and_sorts_out_unreadable_and_incomplete():
    unreadable = SetRef.snapshot(ts("20250104000000"), "10.0.0.1")
    catalog = Catalog.build([*CATALOG.fulls[0].sets.values(), *full(S2),
                             SetInfo(unreadable, problem=f"{unreadable.manifest_key}: malformed manifest: x"),
                             *incr(S2, "20250102010000", missing={"10.0.0.2"})])
    selection = select_sets(catalog, ts(S2), None, DbTarget.parse("ks"))
    assert selection.complete == sorted([SetRef.snapshot(ts(S2), h) for h in HOSTS]
                                        + [SetRef.incremental(ts(S2), "10.0.0.1", ts("20250102010000"))])
    unsealed = SetRef.incremental(ts(S2), "10.0.0.2", ts("20250102010000"))
    assert selection.unreadable == [Finding(unsealed, unsealed.manifest_key, UNSEALED,
                                            "no manifest, though 10.0.0.1 sealed this backup: a run that failed "
                                            "on this host, or a manifest lost since"),
                                    Finding(unreadable, unreadable.manifest_key, MANIFEST,
                                            "unreadable manifest: malformed manifest: x")]
    assert not selection.unreadable[0].damage and selection.unreadable[1].damage
    assert selection.incomplete == 0
    assert select_sets(catalog, None, None, DbTarget.parse("other")).complete == []


def test_damaged_full_breaks_its_whole_chain():
    ref = SetRef.snapshot(ts(S1), "10.0.0.2")
    broken = broken_restore_points(CATALOG, [ref])[ref]
    # The chain ends at the last time every host shipped commit logs under it (10.0.0.1 at 03:30).
    assert (broken.start, broken.end) == (ts(S1), ts("20250101033000"))
    assert broken.text == ("breaks restore points from 20250101000000 to 20250101033000 (UTC): the whole chain "
                           "of this full snapshot of ks.t")


def test_damaged_increment_breaks_from_itself_to_the_chain_end():
    ref = SetRef.incremental(ts(S1), "10.0.0.1", ts("20250101020000"))
    broken = broken_restore_points(CATALOG, [ref])[ref]
    assert (broken.start, broken.end) == (ts("20250101020000"), ts("20250101033000"))
    assert broken.text == ("breaks restore points from 20250101020000 to 20250101033000 (UTC) of ks.t; earlier "
                           "points of its chain (from 20250101000000) still restore")
    # The next chain has no commit logs: it ends at its last increment.
    ref = SetRef.incremental(ts(S2), "10.0.0.2", ts("20250102010000"))
    assert broken_restore_points(CATALOG, [ref])[ref].end == ts("20250102010000")


def test_damaged_commitlog_batch_breaks_replay_from_the_previous_batch():
    first = SetRef.commitlog(ts(S1), IDS["10.0.0.1"], ts("20250101001000"))
    second = SetRef.commitlog(ts(S1), IDS["10.0.0.1"], ts("20250101002000"))
    last = SetRef.commitlog(ts(S1), IDS["10.0.0.2"], ts("20250101034000"))
    broken = broken_restore_points(CATALOG, [first, second, last])
    assert (broken[first].start, broken[first].end) == (ts(S1), ts("20250101033000"))
    assert (broken[second].start, broken[second].end) == (ts("20250101001000"), ts("20250101033000"))
    # Shipped after the chain's end: replay up to the batch itself reads it.
    assert (broken[last].start, broken[last].end) == (ts(S1), ts("20250101034000"))
    assert broken[second].text == ("breaks point-in-time replay (--replay-commitlogs) from 20250101001000 to "
                                   "20250101033000 (UTC); restores without replay are unaffected")


def test_sets_no_restore_uses_break_nothing():
    of_incomplete = SetRef.incremental(ts(S1), "10.0.0.1", ts("20250101023000"))
    on_incomplete_full = SetRef.incremental(ts("20250103000000"), "10.0.0.1", ts("20250103010000"))
    broken = broken_restore_points(CATALOG, [of_incomplete, on_incomplete_full])
    assert broken[of_incomplete].start is None and "its backup is not complete" in broken[of_incomplete].text
    assert broken[on_incomplete_full].end is None
    assert "its full snapshot 20250103000000 is not complete" in broken[on_incomplete_full].text


def test_report_strays_warn_and_damage_counts():
    full_ref = SetRef.snapshot(ts(S1), "10.0.0.1")
    refs = [info.ref for info in CATALOG.fulls[0].sets.values()]
    selection = select_sets(CATALOG, ts(S1), ts(S1), DbTarget())
    manifests = [info.manifest for info in CATALOG.fulls[0].sets.values()]
    stray = Finding(full_ref, full_ref.prefix + "x|[b]", STRAY, "stray: not in the manifest")
    options = {"deep": True}
    clean = build_report(CATALOG, selection, manifests, [stray], [], options)
    assert clean["clean"] and clean["damaged_sets"] == 0 and clean["breaks"] == []
    assert clean["sets"] == 2 and clean["objects"] == 2 and clean["bytes"] == 20
    assert summary_line(clean) == "2 set(s), 2 object(s) verified, 0 re-read: no damage; 1 stray object(s) (warning)"
    assert "x\\|\\[b\\]" in report_markdown(clean)  # a key never becomes markup

    missing = Finding(refs[1], refs[1].file_key(f"{TABLE}/nb-1-big-Data.db"), MISSING, "missing")
    damaged = build_report(CATALOG, selection, manifests, [stray, missing], [], options)
    assert not damaged["clean"] and damaged["damaged_sets"] == 1
    assert [p["problem"] for p in damaged["problems"]] == [MISSING, STRAY]
    assert damaged["problems"][0] == {"set": refs[1].prefix, "kind": "full", "object": missing.key,
                                      "problem": "missing", "detail": "missing", "damage": True}
    assert damaged["breaks"] == [{"set": refs[1].prefix, "kind": "full", "from": S1, "to": "20250101033000",
                                  "restore_points": broken_restore_points(CATALOG, [refs[1]])[refs[1]].text}]
    assert summary_line(damaged) == ("1 damaged object(s) in 1 set(s) (1 missing); 2 set(s), 2 object(s) "
                                     "verified, 0 re-read; 1 stray object(s) (warning)")


def test_a_full_with_complete_sets_built_on_it_lost_a_manifest_and_its_chain_is_broken():
    """issue 22, defect 1: runs build only on a complete full, so a full missing a host's manifest with
    an increment on it lost that manifest: damage, named, with the chain it breaks."""
    lost = SetRef.snapshot(ts("20250103000000"), "10.0.0.1")
    selection = select_sets(CATALOG, ts("20250103000000"), None, DbTarget())
    assert selection.unreadable == [Finding(lost, lost.manifest_key, MANIFEST, "no manifest, though 10.0.0.2 "
                                            "sealed this full and complete sets are built on it: a manifest lost since")]
    broken = broken_restore_points(CATALOG, [lost])[lost]
    assert (broken.start, broken.end) == (ts("20250103000000"), ts("20250103010000"))
    assert broken.text.startswith("breaks restore points from 20250103000000 to 20250103010000 (UTC): the whole "
                                  "chain of this full snapshot of ks.t")
    # A host whose set left no object at all is named too.
    gone = Catalog.build([full(S1)[0], *incr(S1, "20250101010000")])
    finding, = select_sets(gone, None, None, DbTarget()).unreadable
    assert (finding.set, finding.problem) == (SetRef.snapshot(ts(S1), "10.0.0.2"), MANIFEST)
    assert finding.detail.startswith("no manifest, and no object of its set")
    # A name in a manifest's host set that is not a host is no set of the layout: nothing to name.
    odd = Manifest(set=gone.fulls[0].sets["10.0.0.1"].ref, files=(), host="10.0.0.1", host_id=IDS["10.0.0.1"],
                   created_at=ts(S1), db_target="ks.t", hosts=("10.0.0.1", "../x"))
    assert select_sets(Catalog.build([SetInfo(odd.set, odd)]), None, None, DbTarget()).unreadable == []
    report = build_report(gone, select_sets(gone, None, None, DbTarget()), [], [], [], {"deep": False})
    assert not report["clean"] and "1 manifest unreadable or missing" in summary_line(report)
