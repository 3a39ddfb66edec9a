"""The backup plan's rules: open chains, and which backups/ files may leave a node."""
from __future__ import annotations

from datetime import timedelta

from dmf.core.catalog import Catalog, SetInfo
from dmf.core.keys import SetRef
from dmf.core.manifest import Manifest
from dmf.core.plan import CHAIN_IDLE, ChainFiles, deletable, is_open, open_chains, recreated_tables, superseded
from dmf.core.timestamps import parse_ts

T0 = parse_ts("20260101000000")
TID = "0" * 32
HOST = "10.0.0.1"


def full_set(ts, target: str, hosts=(HOST,), node=HOST) -> SetInfo:
    ref = SetRef.snapshot(ts, node)
    return SetInfo(ref, Manifest(set=ref, files=(), host=node, host_id="h", created_at=ts, db_target=target,
                                 hosts=hosts))


def incr_set(snapshot_ts, ts, target: str, node=HOST) -> SetInfo:
    ref = SetRef.incremental(snapshot_ts, node, ts)
    return SetInfo(ref, Manifest(set=ref, files=(), host=node, host_id="h", created_at=ts, db_target=target,
                                 hosts=(HOST,)))


def test_a_chain_closes_after_idling():
    full = full_set(T0, "ks")
    catalog = Catalog.build([full, incr_set(T0, T0 + timedelta(days=3), "ks")])
    group = catalog.fulls[0]
    assert is_open(catalog, group, T0 + timedelta(days=3) + CHAIN_IDLE)
    assert not is_open(catalog, group, T0 + timedelta(days=3) + CHAIN_IDLE + timedelta(seconds=1))


def test_open_chains_are_the_newest_of_each_target_but_our_own():
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    catalog = Catalog.build([full_set(t1, "ks"), full_set(t2, "ks"), full_set(t3, "ks.t"),
                             full_set(t1, "other", hosts=("10.0.0.2",), node="10.0.0.2")])
    now = t3 + timedelta(minutes=5)
    chains = open_chains(catalog, HOST, now, own_snapshot=t3)
    assert [(g.db_target, g.snapshot_ts) for g in chains] == [("ks", t2)]  # t1 superseded; t3 is ours
    assert open_chains(catalog, HOST, t3 + CHAIN_IDLE + timedelta(days=1), own_snapshot=t3) == []


def test_a_file_goes_only_when_every_chain_covering_its_table_holds_it():
    t_file = f"ks/t-{TID}/nb-7-big-Data.db"
    u_file = f"ks/u-{TID}/nb-3-big-Data.db"
    ks_chain = ChainFiles("ks", frozenset({u_file}))      # has u's file, not yet t's
    table_chain = ChainFiles("ks.t", frozenset({t_file}))  # covers t only
    everything = ChainFiles("", frozenset({t_file, u_file}))
    assert deletable([t_file, u_file], [ks_chain, table_chain]) == [u_file]
    assert deletable([t_file, u_file], [table_chain, everything]) == [t_file, u_file]
    assert deletable([t_file], []) == [t_file]
    assert deletable([f"other/x-{TID}/nb-1-big-Data.db"], [table_chain]) == [f"other/x-{TID}/nb-1-big-Data.db"]


def test_a_full_supersedes_only_the_backups_files_it_or_a_complete_set_holds():
    """issue 22, defect 3: a full deleted every backups/ file present before its snapshot, so the files a
    table flushed after the last incremental and before it was dropped (never uploaded, absent from the
    full) were lost."""
    live = f"ks/t-{TID}/nb-7-big-Data.db"
    live_index = f"ks/t-{TID}/.t_idx/nb-7-big-Data.db"
    dropped = f"ks/gone-{'1' * 32}/nb-2-big-Data.db"
    compacted = f"ks/t-{TID}/nb-5-big-Data.db"  # merged into nb-7 before the snapshot: the full holds its rows only
    elsewhere = f"ks/u-{TID}/nb-1-big-Data.db"  # left out of a `ks.t` full, but an open `ks` chain uploaded it
    on_node = [live, live_index, dropped, compacted, elsewhere]
    snapshot = [live, live_index, f"ks/t-{TID}/nb-7-big-Index.db"]
    assert superseded(on_node, snapshot) == [live, live_index]
    assert superseded(on_node, snapshot, held={elsewhere}) == [live, live_index, elsewhere]
    assert superseded(on_node, []) == []


def test_a_table_whose_live_folder_is_not_the_fulls_was_created_again():
    old, new, other = "a" * 32, "b" * 32, "c" * 32
    full = [f"ks/t-{old}/nb-1-big-Data.db", f"ks/t-{old}/schema.cql", f"ks/u-{other}/nb-1-big-Data.db",
            f"ks/gone-{other}/nb-1-big-Data.db"]
    assert recreated_tables(full, [f"ks/t-{new}", f"ks/u-{other}", f"ks/later-{new}"]) == ["ks.t"]
    assert recreated_tables(full, [f"ks/t-{old}", f"ks/u-{other}"]) == []  # the same tables; gone dropped only
    assert recreated_tables([], [f"ks/t-{new}"]) == []
