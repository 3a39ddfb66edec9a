"""Copies (which sets a copy run brings, its lag, who holds a set) and object lock (dates from the policy, a
purge plan that leaves what is locked, short locks): pure decisions, in milliseconds."""
from __future__ import annotations

from datetime import timedelta

import pytest

from dmf.core.catalog import Catalog
from dmf.core.copies import copies_line, copy_lag, copy_targets, holders, sets_to_copy
from dmf.core.errors import InputError
from dmf.core.keys import SetKind, SetRef
from dmf.core.lifecycle import RetentionPolicy, purge_plan
from dmf.core.object_lock import hold_locked, lock_span, locked_line, required_until, retain_until, short_locks

from .test_lifecycle import GRACE, HOST_IDS, HOSTS, T0, batch, full, increment

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


def history(weeks: int = 3) -> list:
    """`weeks` weekly chains: a full, two daily increments, a commit-log batch a day."""
    infos = []
    for w in range(weeks):
        ts = T0 + w * WEEK
        infos += full(ts) + increment(ts, ts + DAY) + increment(ts, ts + 2 * DAY) + batch(ts, ts + DAY)
    return infos


def refs(infos) -> list[SetRef]:
    return [info.ref for info in infos]


def test_a_copy_run_brings_every_complete_set_the_copy_lacks_full_first():
    primary = Catalog.build(history(2))
    copy = Catalog.build(history(1))  # the first chain is there already
    wanted = sets_to_copy(primary, copy)
    second = T0 + WEEK
    assert {r.snapshot_ts for r in wanted} == {second}
    assert len(wanted) == 2 + 2 * 2 + 1
    assert [r.kind for r in wanted[:2]] == [SetKind.SNAPSHOT, SetKind.SNAPSHOT]  # the full before its increments
    assert [r.time for r in wanted] == sorted(r.time for r in wanted)


def test_sets_without_a_manifest_are_never_copied_and_a_set_incomplete_on_the_copy_is():
    unsealed = full(T0, complete=False)  # the second host's set has no manifest
    primary = Catalog.build(unsealed)
    assert sets_to_copy(primary, Catalog.build([])) == [SetRef.snapshot(T0, HOSTS[1])]
    assert sets_to_copy(Catalog.build(full(T0)), primary) == [SetRef.snapshot(T0, HOSTS[0])]


def test_a_copy_never_gets_back_what_its_own_retention_purges():
    primary = Catalog.build(history(3))
    now = T0 + 3 * WEEK
    keep_one = RetentionPolicy(keep_fulls=1)
    wanted = sets_to_copy(primary, Catalog.build([]), keep_one, now)
    expired = set(purge_plan(primary, keep_one, now, GRACE).sets)
    assert wanted and not expired & set(wanted)
    assert {r.snapshot_ts for r in wanted if r.kind is not SetKind.COMMITLOG} == {T0 + 2 * WEEK}


def test_lag_is_the_age_of_the_oldest_set_not_copied():
    primary = Catalog.build(history(2))
    now = T0 + WEEK + 3 * DAY
    behind = copy_lag("dr", primary, Catalog.build(history(1)), now=now)
    assert behind.missing == 7 and behind.oldest_missing == T0 + WEEK
    assert behind.lag(now) == 3 * DAY
    assert "7 set(s) not copied yet" in behind.describe(now) and "72.0 h behind" in behind.describe(now)
    level = copy_lag("dr", primary, primary, now=now)
    assert level.lag(now) == timedelta(0) and "up to date" in level.describe(now)


def test_holders_name_the_copies_that_hold_every_set_a_restore_needs():
    chain = refs(full(T0) + increment(T0, T0 + DAY))
    copies = {"dr-b": Catalog.build(full(T0)), "dr-a": Catalog.build(history(1)), "empty": Catalog.build([])}
    assert holders(chain, copies) == ["dr-a"]
    assert copies_line("the primary is unreachable", ["dr-a"]) == (
        "the primary is unreachable; copies that hold it: dr-a (restore from one with --repository-block dr-a)")
    assert copies_line("x", []) == "x; no copy holds it"


def test_copy_targets():
    assert copy_targets(["a", "b", "a"], None, "default") == ["a", "b"]
    assert copy_targets(["a"], "c", "default") == ["c"]
    with pytest.raises(InputError, match="names no copy"):
        copy_targets([], None, "default")
    with pytest.raises(InputError, match="itself"):
        copy_targets(["default"], None, "default")


def test_the_lock_lasts_a_chain_and_the_window_and_needs_both():
    assert lock_span("none", "7d", None) is None
    assert lock_span("compliance", "7d", 14) == 21 * DAY
    for every, days in (("never", 14), ("500 increments", 14), ("7d", None)):
        with pytest.raises(InputError, match="needs keep_days and an age"):
            lock_span("governance", every, days)
    assert retain_until(T0 + timedelta(microseconds=1), DAY) == T0 + DAY + timedelta(seconds=1)
    assert retain_until(T0, DAY) == T0 + DAY


def test_a_set_is_locked_at_least_until_a_purge_could_remove_it():
    """On every day a retained restore point needs a set (the purge keeps it), the set is still locked, while
    the schedule takes a full every full_every (after the history ends its newest full stays for ever)."""
    span = lock_span("governance", "7d", 3)
    catalog = Catalog.build(history(4))
    policy = RetentionPolicy(keep_days=3)
    removed_some = False
    for hour in range(1, 28 * 24, 7):
        now = T0 + timedelta(hours=hour)
        purged = set(purge_plan(catalog, policy, now, GRACE).sets)
        removed_some |= bool(purged)
        for info in (i for g in catalog.all_groups() for i in g.sets.values()):
            if info.ref.time <= now and info.ref not in purged:
                assert retain_until(info.ref.time, span) >= now, (now, info.ref)
    assert removed_some


def test_short_locks_name_objects_locked_for_less_than_the_policy():
    ref = SetRef.snapshot(T0, HOSTS[0])
    span = 10 * DAY
    found = short_locks(ref, {"a": T0 + span, "b": T0 + span - timedelta(seconds=1), "c": None}, span)
    assert [s.key for s in found] == ["b", "c"]
    assert found[1].detail == "no lock, the retention policy needs 20260111000000"
    assert required_until(ref, span) == T0 + span


def test_a_purge_leaves_locked_sets_with_their_chain_and_says_until_when():
    catalog = Catalog.build(history(3))
    now = T0 + 3 * WEEK
    plan = purge_plan(catalog, RetentionPolicy(keep_fulls=1), now, GRACE)
    first_inc = SetRef.incremental(T0, HOSTS[0], T0 + DAY)
    batch_ref = SetRef.commitlog(T0 + WEEK, HOST_IDS[HOSTS[0]], T0 + WEEK + DAY)
    assert first_inc in plan.sets and batch_ref in plan.sets
    lapsed = SetRef.snapshot(T0 + WEEK, HOSTS[0])  # its lock ends now: it holds nothing
    locks = {first_inc: now + DAY, batch_ref: now + 2 * DAY, lapsed: now}
    held = hold_locked(plan, locks, now)
    kept = {ref for group, _ in held.locked for info in group.sets.values() for ref in [info.ref]}
    # The locked increment keeps its whole chain (the full and the other increment); the batch stays alone.
    assert {r.snapshot_ts for r in kept if r.kind is not SetKind.COMMITLOG} == {T0}
    assert SetRef.snapshot(T0, HOSTS[1]) in kept and batch_ref in kept
    assert not kept & set(held.sets) and set(held.sets) | kept == set(plan.sets)
    assert T0 not in held.emptied_snapshots and T0 + WEEK not in held.emptied_snapshots
    assert held.bytes == sum(g.bytes for g in held.expired)
    lines = sorted(locked_line(g, until) for g, until in held.locked)
    assert "full 20260101000000 (under 20260101000000) locked until 20260123000000" in lines
    assert hold_locked(plan, {first_inc: now}, now) == plan  # a lock that ends now holds nothing
