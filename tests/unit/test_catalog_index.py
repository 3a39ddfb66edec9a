"""The catalog index (pure parts) and what `backup list` computes from a catalog: chains, windows, filters."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from dmf.core.catalog import (
    Catalog, SetInfo, SetSummary, chain_summaries, holds_any_of, listed, parse_kind,
)
from dmf.core.errors import InputError, LayoutError
from datetime import timedelta

from dmf.core.index import (
    CLOSE_AFTER, IndexEntry, ManifestStamp, SnapshotListing, closable, format_index, parse_closed, parse_index,
    reconcile, set_infos, summarise,
)
from dmf.core.keys import SetKind, SetRef
from dmf.core.targets import DbTarget

from .test_catalog import HOSTS, IDS, commitlog, full, incr, manifest, ts

SNAP = ts("20250101000000")
DATA = "ks/t-" + "0" * 32 + "/"
FOLDED = {SetKind.SNAPSHOT: "ks/t-", SetKind.INCREMENTAL: "ks/t-", SetKind.COMMITLOG: "CommitLog-"}
FULL_1 = SetRef.snapshot(SNAP, "10.0.0.1")
INCR_1 = SetRef.incremental(SNAP, "10.0.0.1", ts("20250101001500"))
BATCH_1 = SetRef.commitlog(SNAP, IDS["10.0.0.1"], ts("20250101000100"))


def stamp(etag: str = "e1", size: int = 100) -> ManifestStamp:
    return ManifestStamp(etag, size)


def entry(ref: SetRef, etag: str = "e1") -> IndexEntry:
    return IndexEntry(stamp(etag), SetSummary.of(manifest(ref, "10.0.0.1")))


def listing_of(*refs: SetRef, manifests: dict[SetRef, str] | None = None) -> SnapshotListing:
    """Each set listed with a folded data prefix; those in `manifests` also with their manifest (ETag)."""
    listing = SnapshotListing()
    for ref in refs:
        listing.add(ref.prefix + FOLDED[ref.kind])
    for ref, etag in (manifests or {}).items():
        listing.add(ref.manifest_key, stamp(etag))
    return listing


# ---- the listing --------------------------------------------------------------------------------

def test_listing_finds_sets_from_folded_prefixes_and_manifests_from_keys():
    listing = listing_of(FULL_1, INCR_1, BATCH_1, manifests={FULL_1: "e1", BATCH_1: "e2"})
    assert set(listing.sets.values()) == {FULL_1, INCR_1, BATCH_1}
    assert listing.manifests == {FULL_1.prefix: stamp("e1"), BATCH_1.prefix: stamp("e2")}


def test_listing_ignores_keys_outside_the_layout_and_data_named_like_a_manifest():
    listing = SnapshotListing()
    listing.add("20250101000000/10.0.0.1/backups/notatime/manifest.json", stamp())
    listing.add("20250101000000/10.0.0.1/unknown/x/y", stamp())
    listing.add("20250101000000/10.0.0.1/backups/", None)
    listing.add(FULL_1.prefix + DATA + "manifest.json", stamp())  # Cassandra's own, inside a table folder
    assert list(listing.sets.values()) == [FULL_1]
    assert listing.manifests == {}


# ---- staleness ----------------------------------------------------------------------------------

def test_reconcile_keeps_matching_entries_and_reads_new_changed_and_unindexed_manifests():
    indexed = {FULL_1.prefix: entry(FULL_1), INCR_1.prefix: entry(INCR_1)}
    listing = listing_of(FULL_1, INCR_1, BATCH_1, manifests={FULL_1: "e1", INCR_1: "changed", BATCH_1: "e1"})
    valid, unread = reconcile(indexed, listing)
    assert valid == {FULL_1.prefix: entry(FULL_1)}
    assert unread == sorted([INCR_1.prefix, BATCH_1.prefix])


def test_reconcile_drops_entries_whose_manifest_is_gone():
    indexed = {FULL_1.prefix: entry(FULL_1), INCR_1.prefix: entry(INCR_1)}
    valid, unread = reconcile(indexed, listing_of(FULL_1, manifests={FULL_1: "e1"}))  # INCR_1 deleted
    assert valid == {FULL_1.prefix: entry(FULL_1)} and unread == []
    valid, unread = reconcile(indexed, listing_of(FULL_1, INCR_1, manifests={FULL_1: "e1"}))  # its manifest only
    assert valid == {FULL_1.prefix: entry(FULL_1)} and unread == []
    assert [i.complete for i in set_infos(listing_of(FULL_1, INCR_1, manifests={FULL_1: "e1"}), valid)] == [True, False]


def test_a_missing_index_means_every_manifest_is_read():
    listing = listing_of(FULL_1, INCR_1, manifests={FULL_1: "e1", INCR_1: "e1"})
    assert reconcile({}, listing) == ({}, sorted([FULL_1.prefix, INCR_1.prefix]))


def test_set_infos_carry_summary_or_problem():
    listing = listing_of(FULL_1, INCR_1, BATCH_1, manifests={FULL_1: "e1", INCR_1: "e1"})
    bad = IndexEntry(stamp(), None, "malformed manifest")
    infos = {i.ref: i for i in set_infos(listing, {FULL_1.prefix: entry(FULL_1), INCR_1.prefix: bad})}
    assert infos[FULL_1].complete and infos[FULL_1].summary == entry(FULL_1).summary
    assert not infos[INCR_1].complete and infos[INCR_1].problem == "malformed manifest"
    assert not infos[BATCH_1].complete and infos[BATCH_1].problem == ""


def test_an_unstamped_walk_trusts_entries_by_prefix_and_reads_every_other_listed_set():
    walk = SnapshotListing(stamped=False)
    for ref in (FULL_1, INCR_1, BATCH_1):
        walk.add(ref.prefix)
    indexed = {FULL_1.prefix: entry(FULL_1), "20250101000000/10.0.0.9/snapshots/": entry(FULL_1)}  # a set gone
    valid, unread = reconcile(indexed, walk)
    assert valid == {FULL_1.prefix: entry(FULL_1)}
    assert unread == sorted([INCR_1.prefix, BATCH_1.prefix])  # unindexed, or in flight: read


# ---- closing a chain ----------------------------------------------------------------------------

WEEK_1, WEEK_2 = "20250101000000", "20250108000000"
SETTLED = ts(WEEK_2) + CLOSE_AFTER


def catalog_of(*infos: list[SetInfo]) -> Catalog:
    return Catalog.build(info for group in infos for info in group)


def test_a_chain_closes_once_a_later_full_of_its_target_and_hosts_has_settled():
    history = [full(WEEK_1), incr(WEEK_1, "20250101001500"), commitlog(WEEK_1, "20250101000100"), full(WEEK_2)]
    assert closable(catalog_of(*history), SETTLED) == {ts(WEEK_1)}
    assert closable(catalog_of(*history), SETTLED - timedelta(seconds=1)) == set()  # the new full is too recent
    assert closable(catalog_of(*history[:3]), SETTLED) == set()  # the newest chain never closes


@pytest.mark.parametrize("later", [
    pytest.param(lambda: full(WEEK_2, target="ks.other"), id="a full of another target"),
    pytest.param(lambda: full(WEEK_2, hosts=("10.0.0.1",)), id="a full of fewer hosts"),
    pytest.param(lambda: full(WEEK_2, missing={"10.0.0.2"}), id="an incomplete full"),
])
def test_a_chain_stays_open_while_runs_may_still_add_to_it(later):
    assert closable(catalog_of(full(WEEK_1), later()), SETTLED) == set()


@pytest.mark.parametrize("unfinished", [
    pytest.param(lambda: incr(WEEK_1, "20250101001500", missing={"10.0.0.2"}), id="a failed increment"),
    pytest.param(lambda: [SetInfo(SetRef.incremental(ts(WEEK_1), "10.0.0.1", ts("20250101003000")),
                                  problem="malformed")], id="a malformed manifest"),
])
def test_a_chain_with_an_unfinished_set_stays_open(unfinished):
    """Cleanup or purge removes it later: a closed summary must never hold a set a listing would
    show otherwise once that happens."""
    assert closable(catalog_of(full(WEEK_1), unfinished(), full(WEEK_2)), SETTLED) == set()


def test_a_closed_summary_round_trips_with_its_nodes_and_refuses_sets_outside_the_layout():
    entries = {FULL_1.prefix: entry(FULL_1), INCR_1.prefix: entry(INCR_1)}
    nodes = {"20250101000000/10.0.0.1/"}
    data = format_index(SNAP, entries, nodes)
    assert json.loads(data)["nodes"] == ["10.0.0.1/"]
    found_nodes, infos = parse_closed(data, SNAP)
    assert found_nodes == frozenset(nodes)
    assert {i.ref: i.summary for i in infos} == {FULL_1: entry(FULL_1).summary, INCR_1: entry(INCR_1).summary}
    with pytest.raises(LayoutError, match="malformed closed chain summary"):
        parse_closed(format_index(SNAP, entries), SNAP)  # a catalog.json is not one
    body = json.loads(data)
    body["sets"]["10.0.0.1/backups/../../../etc/"] = body["sets"]["10.0.0.1/snapshots/"]
    with pytest.raises(LayoutError, match="malformed closed chain summary of snapshot 20250101000000"):
        parse_closed(json.dumps(body).encode(), SNAP)


# ---- manifests and the index object -------------------------------------------------------------

def test_summarise_reads_a_manifest_and_reports_a_malformed_one():
    good = manifest(INCR_1, "10.0.0.1")
    assert summarise(INCR_1, good.to_json()) == SetInfo(INCR_1, good)
    assert summarise(INCR_1, good.to_json()).summary == SetSummary(
        "10.0.0.1", IDS["10.0.0.1"], INCR_1.time, "ks.t", HOSTS, 1, 10)
    for data in (b"{not json", manifest(FULL_1, "10.0.0.1").to_json(),  # another set's manifest
                 replace(good, db_target="system.local").to_json()):
        info = summarise(INCR_1, data)
        assert not info.complete and info.problem.startswith(INCR_1.manifest_key + ": ")


def test_index_round_trips():
    entries = {FULL_1.prefix: entry(FULL_1), INCR_1.prefix: IndexEntry(stamp("e9", 7), None, "malformed")}
    data = format_index(SNAP, entries)
    assert parse_index(data, SNAP) == entries
    assert set(json.loads(data)["sets"]) == {"10.0.0.1/snapshots/", "10.0.0.1/backups/20250101001500/"}


@pytest.mark.parametrize("mutate", [
    lambda body: body.update(format=2),
    lambda body: body.update(snapshot_ts="20250102000000"),
    lambda body: body.update(sets=[]),
    lambda body: body["sets"]["10.0.0.1/snapshots/"].update(size=-1),
    lambda body: body["sets"]["10.0.0.1/snapshots/"].update(files="1"),
    lambda body: body["sets"]["10.0.0.1/snapshots/"].update(hosts=[1]),
    lambda body: body["sets"]["10.0.0.1/snapshots/"].update(created_at="yesterday"),
    lambda body: body["sets"]["10.0.0.1/snapshots/"].pop("etag"),
    lambda body: body["sets"]["10.0.0.1/snapshots/"].update(db_target="a.b.c"),
])
def test_a_malformed_index_is_refused(mutate):
    body = json.loads(format_index(SNAP, {FULL_1.prefix: entry(FULL_1)}))
    mutate(body)
    with pytest.raises(LayoutError, match="malformed catalog index of snapshot 20250101000000"):
        parse_index(json.dumps(body).encode(), SNAP)
    with pytest.raises(LayoutError):
        parse_index(b"\xff not json", SNAP)


# ---- what `backup list` computes ----------------------------------------------------------------

def test_summary_only_groups_refuse_to_pose_as_manifests():
    catalog = Catalog.build([SetInfo(i.ref, summary=i.summary) for i in full("20250101000000")])
    assert catalog.fulls[0].complete and catalog.fulls[0].bytes == 20
    with pytest.raises(LookupError, match="summaries only"):
        catalog.fulls[0].manifests
    assert catalog == Catalog.build(full("20250101000000"))  # the listing's view: equal to the manifests'


def test_chain_size_and_window_span_complete_increments():
    catalog = Catalog.build([
        *full("20250101000000"),
        *incr("20250101000000", "20250101001500"),
        *incr("20250101000000", "20250101003000"),
        *incr("20250101000000", "20250101004500", missing={"10.0.0.2"}),  # incomplete: not in the chain
        *full("20250102000000", missing={"10.0.0.1"}),  # incomplete: no chain
    ])
    chains = chain_summaries(catalog)
    assert set(chains) == {ts("20250101000000")}
    chain = chains[ts("20250101000000")]
    assert chain.bytes == 3 * 20
    assert (chain.restorable_from, chain.restorable_until) == (ts("20250101000000"), ts("20250101003000"))


def test_window_reaches_the_last_time_every_host_shipped_commit_logs():
    base = [*full("20250101000000"), *incr("20250101000000", "20250101001500")]
    one_host = Catalog.build([*base, *commitlog("20250101000000", "20250101005000")])
    assert chain_summaries(one_host)[ts("20250101000000")].restorable_until == ts("20250101001500")
    both = Catalog.build([*base, *commitlog("20250101000000", "20250101005000"),
                          *commitlog("20250101000000", "20250101004000", host="10.0.0.2"),
                          *commitlog("20250101000000", "20250101002000", host="10.0.0.2")])
    assert chain_summaries(both)[ts("20250101000000")].restorable_until == ts("20250101004000")
    earlier = Catalog.build([*base, *commitlog("20250101000000", "20250101001000"),
                             *commitlog("20250101000000", "20250101001000", host="10.0.0.2")])
    assert chain_summaries(earlier)[ts("20250101000000")].restorable_until == ts("20250101001500")
    elsewhere = Catalog.build([*base, *commitlog("20241231000000", "20250101005000"),
                               *commitlog("20241231000000", "20250101005000", host="10.0.0.2")])
    assert chain_summaries(elsewhere)[ts("20250101000000")].restorable_until == ts("20250101001500")


def test_listed_filters_by_time_kind_and_target():
    catalog = Catalog.build([
        *full("20250101000000"), *incr("20250101000000", "20250101001500"),
        *full("20250102000000", target="other"), *full("20250103000000", target=""),
        *commitlog("20250101000000", "20250101000100"),
    ])
    times = lambda groups: [g.time.strftime("%d%H%M") for g in groups]  # noqa: E731
    assert times(listed(catalog)) == ["010000", "010001", "010015", "020000", "030000"]
    assert times(listed(catalog, ts("20250101000100"), ts("20250102000000"))) == ["010001", "010015", "020000"]
    assert times(listed(catalog, kind=SetKind.SNAPSHOT)) == ["010000", "020000", "030000"]
    assert times(listed(catalog, kind=SetKind.COMMITLOG)) == ["010001"]
    assert times(listed(catalog, target=DbTarget.parse("ks.t"))) == ["010000", "010001", "010015", "030000"]
    assert times(listed(catalog, kind=SetKind.SNAPSHOT, target=DbTarget.parse("other.x"))) == ["020000", "030000"]


@pytest.mark.parametrize("taken,wanted,expected", [
    ("", "ks.t", True), ("ks", "ks.t", True), ("ks.t", "ks.t", True), ("ks.t", "ks", True),
    ("ks.u", "ks.t", False), ("ks.t", "other", False), ("other", "ks", False), ("ks", "", True),
])
def test_holds_any_of(taken, wanted, expected):
    assert holds_any_of(taken, DbTarget.parse(wanted)) is expected


def test_parse_kind():
    assert [parse_kind(n) for n in ("full", "incremental", "commitlog")] == list(SetKind)
    with pytest.raises(InputError, match="invalid --kind 'snapshots': expected full, incremental, commitlog"):
        parse_kind("snapshots")
