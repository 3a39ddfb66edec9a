"""Bounded chains and retention: full_every, and a purge plan that keeps every retained restore point."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest

from dmf.core.catalog import Catalog, SetInfo, resolve_chain
from dmf.core.errors import InputError
from dmf.core.keys import SetRef
from dmf.core.lifecycle import FullEvery, RetentionPolicy, damage_line, purge_plan
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import parse_ts

T0 = parse_ts("20260101000000")
HOSTS = ("10.0.0.1", "10.0.0.2")
HOST_IDS = {"10.0.0.1": "11111111-1111-1111-1111-111111111111", "10.0.0.2": "22222222-2222-2222-2222-222222222222"}
GRACE = timedelta(hours=24)


def manifest(ref: SetRef, node: str, target: str, size: int = 100) -> Manifest:
    return Manifest(set=ref, files=(FileEntry("x/t-" + "0" * 32 + "/nb-1-big-Data.db", size, "0" * 64),),
                    host=node, host_id=HOST_IDS.get(node, node), created_at=ref.time, db_target=target, hosts=HOSTS)


def full(ts, target="ks", hosts=HOSTS, complete=True) -> list[SetInfo]:
    return [SetInfo(SetRef.snapshot(ts, h), manifest(SetRef.snapshot(ts, h), h, target) if complete or i else None)
            for i, h in enumerate(hosts)]


def increment(snapshot_ts, ts, target="ks", hosts=HOSTS, size=100) -> list[SetInfo]:
    return [SetInfo(SetRef.incremental(snapshot_ts, h, ts), manifest(SetRef.incremental(snapshot_ts, h, ts), h,
                                                                     target, size)) for h in hosts]


def batch(snapshot_ts, ts, host="10.0.0.1") -> list[SetInfo]:
    ref = SetRef.commitlog(snapshot_ts, HOST_IDS[host], ts)
    return [SetInfo(ref, manifest(ref, host, ""))]


def chain_group(catalog: Catalog, ts):
    return next(g for g in catalog.fulls if g.snapshot_ts == ts)


@pytest.mark.parametrize("text, expected", [
    ("7d", FullEvery(age=timedelta(days=7))),
    ("12h, 500 increments, 64GiB", FullEvery(timedelta(hours=12), 500, 64 * 2**30)),
    ("1 increment", FullEvery(increments=1)),
    ("1.5w", FullEvery(age=timedelta(weeks=1.5))),
    ("never", FullEvery()),
    ("", FullEvery()),
])
def test_full_every_parses(text, expected):
    assert FullEvery.parse(text) == expected


@pytest.mark.parametrize("text", ["7", "7 days", "0d", "2.5 increments", "7d,8d", "-1h", "7d;64GiB"])
def test_full_every_refuses_nonsense_in_one_line(text):
    with pytest.raises(InputError) as error:
        FullEvery.parse(text)
    assert "\n" not in str(error.value)


def test_a_chain_ends_at_the_first_limit_reached():
    catalog = Catalog.build([*full(T0), *increment(T0, T0 + timedelta(hours=1), size=2**29),
                             *increment(T0, T0 + timedelta(hours=2), size=2**29)])
    the_full, increments = catalog.fulls[0], catalog.increments_of(catalog.fulls[0])
    soon = T0 + timedelta(hours=3)
    assert FullEvery().due(the_full, increments, T0 + timedelta(days=999)) is None
    assert FullEvery(age=timedelta(days=1)).due(the_full, increments, soon) is None
    assert "1 days old" in FullEvery(age=timedelta(days=1)).due(the_full, increments, T0 + timedelta(days=1))
    assert "2 increments" in FullEvery(increments=2).due(the_full, increments, soon)
    assert FullEvery(increments=3).due(the_full, increments, soon) is None
    # two hosts x two increments x 0.5 GiB
    assert "2.00 GiB" in FullEvery(increment_bytes=2 * 2**30).due(the_full, increments, soon)
    assert FullEvery(increment_bytes=3 * 2**30).due(the_full, increments, soon) is None


def test_a_policy_is_needed_and_sane():
    for bad in (dict(), dict(keep_fulls=0), dict(keep_days=0), dict(keep_days=-1)):
        with pytest.raises(InputError):
            RetentionPolicy(**bad)


def test_keep_fulls_removes_older_chains_increments_first_and_keeps_batches_since_the_oldest_kept():
    d = timedelta(days=1)
    sets = [*full(T0), *increment(T0, T0 + d), *batch(T0, T0 + d),
            *full(T0 + 2 * d), *increment(T0 + 2 * d, T0 + 3 * d),
            # shipped under the old snapshot while the new full was being taken: still needed
            *batch(T0, T0 + 2 * d + timedelta(minutes=1)),
            *full(T0 + 4 * d), *increment(T0 + 4 * d, T0 + 5 * d), *batch(T0 + 4 * d, T0 + 5 * d)]
    catalog = Catalog.build(sets)
    plan = purge_plan(catalog, RetentionPolicy(keep_fulls=2), T0 + 6 * d, GRACE)
    assert [g.snapshot_ts for g in plan.retained] == [T0 + 2 * d, T0 + 4 * d]
    assert [(g.kind.value, g.time) for g in plan.expired] == [
        ("backups", T0 + d), ("commitlogs", T0 + d), ("snapshots", T0)]
    assert plan.keep_commitlogs_from == T0 + 2 * d
    assert plan.bytes == 100 + 200 + 200
    assert plan.counts() == {"full": 1, "incremental": 1, "commitlog": 1}
    assert plan.emptied_snapshots == ()  # T0 still holds the batch shipped after the kept full
    assert plan.abandoned == ()


def test_every_lineage_keeps_its_newest_full_and_a_window_keeps_the_full_serving_its_start():
    d = timedelta(days=1)
    sets = [*full(T0, target="ks.t"), *full(T0 + d), *full(T0 + 3 * d), *full(T0 + 6 * d)]
    plan = purge_plan(Catalog.build(sets), RetentionPolicy(keep_days=4), T0 + 8 * d, GRACE)
    # window starts at T0+4d: the full of T0+3d serves it; the lone ks.t full is its lineage's newest
    assert [(g.db_target, g.snapshot_ts) for g in plan.retained] == [
        ("ks.t", T0), ("ks", T0 + 3 * d), ("ks", T0 + 6 * d)]
    assert [g.snapshot_ts for g in plan.expired] == [T0 + d]
    assert plan.emptied_snapshots == (T0 + d,)


def test_failed_runs_sets_go_after_the_grace_once_the_policy_would_drop_them_whole():
    d = timedelta(days=1)
    sets = [*full(T0), *full(T0 + d, complete=False), *full(T0 + 2 * d)]
    now = T0 + 2 * d + timedelta(hours=1)
    plan = purge_plan(Catalog.build(sets), RetentionPolicy(keep_fulls=1), now, GRACE)
    assert [g.snapshot_ts for g in plan.expired] == [T0]
    assert sorted(ref.node for ref in plan.abandoned) == list(HOSTS)  # the one with a manifest too
    assert (T0 + d) in plan.emptied_snapshots and plan.damaged == ()
    assert purge_plan(Catalog.build(sets), RetentionPolicy(keep_fulls=1), T0 + d + timedelta(hours=1),
                      GRACE).abandoned == ()
    # Inside the policy it is kept as the full it may have been (a lost manifest looks the same) and
    # reported, without counting as a complete one: the two complete fulls stay too.
    plan = purge_plan(Catalog.build(sets), RetentionPolicy(keep_fulls=2), now, GRACE)
    assert [g.snapshot_ts for g in plan.retained] == [T0, T0 + d, T0 + 2 * d]
    assert plan.sets == [] and [g.snapshot_ts for g in plan.damaged] == [T0 + d]
    assert damage_line(plan.damaged[0]) == (
        "full 20260102000000 (under 20260102000000) is not complete (10.0.0.1: no manifest): a run that failed "
        "there, or a manifest damaged or lost since; `dmf backup verify` names it")


def random_history(rng: random.Random) -> tuple[list[SetInfo], object]:
    """Fulls of two lineages, hourly increments, batches per host, now and then a failed run."""
    sets: list[SetInfo] = []
    t = T0
    current = {"ks": None, "": None}
    for _ in range(rng.randint(5, 60)):
        t += timedelta(hours=rng.randint(1, 30))
        target = rng.choice(["ks", "ks", ""])
        roll = rng.random()
        if current[target] is None or roll < 0.15:
            sets += full(t, target=target, complete=rng.random() > 0.1)
            if sets[-1].manifest is not None and sets[-2].manifest is not None:
                current[target] = t
        elif roll < 0.8:
            sets += increment(current[target], t, target=target)
        else:
            snapshot = max(s for s in current.values() if s is not None)
            sets += batch(snapshot, t, host=rng.choice(HOSTS))
    return sets, t


@pytest.mark.parametrize("seed", range(40))
def test_every_retained_restore_point_resolves_the_same_after_the_purge(seed):
    rng = random.Random(seed)
    sets, last = random_history(rng)
    now = last + timedelta(hours=rng.randint(0, 100))
    keep_fulls, keep_days = rng.choice([None, 1, 2, 3]), rng.choice([None, 1, 3, 10])
    policy = RetentionPolicy(keep_fulls=keep_fulls if keep_fulls or keep_days else 1, keep_days=keep_days)
    before = Catalog.build(sets)
    plan = purge_plan(before, policy, now, GRACE)
    gone = {ref.prefix for ref in plan.sets}
    after = Catalog.build(s for s in sets if s.ref.prefix not in gone)
    # The restore points the policy promises: the window, and every time since the Nth newest full of
    # each lineage (for every target, since restores pick fulls of any lineage that covers them).
    starts = [now - timedelta(days=policy.keep_days)] if policy.keep_days else []
    if policy.keep_fulls:
        lineages = {}
        for g in before.fulls:
            if g.complete:
                lineages.setdefault((g.db_target, frozenset(g.hosts)), []).append(g.time)
        starts.append(max(times[-policy.keep_fulls:][0] for times in lineages.values()) if lineages else now)
    start = min(starts)
    points = [start + (now - start) * i / 50 for i in range(51)] if now > start else [now]
    for at in points:
        for target in (DbTarget("ks"), DbTarget("ks", "t"), DbTarget()):
            assert resolve_chain(before, target, at) == resolve_chain(after, target, at), (seed, at, target)
    # Nothing complete of a retained chain goes; every expired group is complete.
    kept = {g.snapshot_ts for g in plan.retained}
    assert all(g.complete and (g.kind.value == "commitlogs" or g.snapshot_ts not in kept) for g in plan.expired)
    # Nothing under a kept full goes, whether it lists complete or not (a partial full kept included).
    assert not any(ref.snapshot_ts in kept for ref in plan.sets)


def damaged_chain(start, hours: int, host_state: str) -> list[SetInfo]:
    """A two-host chain: a full at `start` whose second host's manifest is `host_state` (malformed, or
    missing: the set's objects without a manifest), and hourly increments on it."""
    sets = full(start)
    if host_state == "malformed":
        sets[1] = SetInfo(sets[1].ref, problem=f"{sets[1].ref.manifest_key}: malformed manifest: Expecting value")
    else:
        sets[1] = SetInfo(sets[1].ref)
    for h in range(1, hours + 1):
        sets += increment(start, start + timedelta(hours=h))
    return sets


@pytest.mark.parametrize("host_state", ["malformed", "missing"])
def test_a_damaged_full_inside_retention_keeps_its_chain_and_the_last_complete_one_before_it(host_state):
    """issue 22, defect 1: one host's manifest of the newest full, damaged or lost, made the purge plan
    remove that whole chain (its sound sets as a failed run's, its increments as expired) and keep no full."""
    d = timedelta(days=1)
    now = T0 + 30 * d
    chain = damaged_chain(now - 2 * d, 46, host_state)
    catalog = Catalog.build(chain)
    plan = purge_plan(catalog, RetentionPolicy(keep_fulls=4, keep_days=14), now, GRACE)
    assert plan.sets == [] and plan.emptied_snapshots == ()
    assert [g.snapshot_ts for g in plan.retained] == [now - 2 * d]
    assert [(g.kind.value, g.snapshot_ts) for g in plan.damaged] == [("snapshots", now - 2 * d)]

    # With older chains: only the policy's own expiry goes, and the last complete full before it stays
    # (it is what a restore into the damaged chain's days now resolves to).
    older = [*full(now - 20 * d), *increment(now - 20 * d, now - 19 * d),
             *full(now - 10 * d), *increment(now - 10 * d, now - 9 * d), *batch(now - 10 * d, now - 9 * d)]
    catalog = Catalog.build([*older, *chain])
    for policy in (RetentionPolicy(keep_fulls=1), RetentionPolicy(keep_days=1)):
        plan = purge_plan(catalog, policy, now, GRACE)
        assert [g.snapshot_ts for g in plan.retained] == [now - 10 * d, now - 2 * d], policy
        assert {ref.snapshot_ts for ref in plan.sets} == {now - 20 * d}, policy
        assert plan.keep_commitlogs_from == now - 10 * d
        assert [g.snapshot_ts for g in plan.damaged] == [now - 2 * d]
    # Past the policy it goes as it would whole: its sound sets, never the damaged manifest itself.
    plan = purge_plan(Catalog.build([*chain, *full(now - d)]), RetentionPolicy(keep_fulls=1), now, GRACE)
    gone = {ref.prefix for ref in plan.sets}
    assert {info.ref.prefix for info in chain if info.complete} <= gone
    assert (chain[1].ref.prefix in gone) is (host_state == "missing")
    assert [g.snapshot_ts for g in plan.damaged] == ([now - 2 * d] if host_state == "malformed" else [])


def test_a_retained_chain_loses_nothing_to_a_partial_increment_or_batch():
    """A run that failed on one host inside a kept chain, or a set whose manifest was lost since: the
    bucket cannot tell them apart, so a purge keeps them while the chain is kept (cleanup sweeps the
    manifest-less sets past the grace)."""
    d = timedelta(days=1)
    lost = SetInfo(SetRef.commitlog(T0, HOST_IDS["10.0.0.1"], T0 + 2 * d))
    sets = [*full(T0), *increment(T0, T0 + d)[:1], SetInfo(SetRef.incremental(T0, HOSTS[1], T0 + d)), lost]
    plan = purge_plan(Catalog.build(sets), RetentionPolicy(keep_fulls=1), T0 + 5 * d, GRACE)
    assert plan.sets == []
    assert [(g.kind.value, g.time) for g in plan.damaged] == [("backups", T0 + d)]
