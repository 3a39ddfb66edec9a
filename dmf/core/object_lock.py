"""S3 Object Lock (pure): how long every object dmf writes stays locked, which sets a purge must leave
for their lock, and which locks are shorter than the retention policy needs.

The lock is derived from the retention policy: an object is locked at least until a purge could remove
it. A set written at W is needed by restore points up to the end of its chain, which ends at most one
`full_every` age after the chain's full (taken at or before W); a restore point stays in the window for
`keep_days`. So every object written at W is locked until W + full_every's age + keep_days (rounded up to
the second), and a set taken at T needs a lock until at least T + that span (W >= T). That needs a time
bound on both: an age in full_every and keep_days.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from dmf.core.catalog import KIND_NAMES, Group
from dmf.core.errors import InputError
from dmf.core.keys import SetKind, SetRef
from dmf.core.lifecycle import FullEvery, PurgePlan
from dmf.core.timestamps import format_ts

MODES = ("governance", "compliance")


def lock_span(object_lock: str, full_every: str, keep_days: float | None) -> timedelta | None:
    """How long an object stays locked after it is written; None when object_lock is none."""
    if object_lock == "none":
        return None
    if object_lock not in MODES:
        raise InputError(f"object_lock must be none, governance or compliance, not {object_lock!r}")
    age = FullEvery.parse(full_every).age
    if age is None or not keep_days:
        raise InputError("object_lock needs keep_days and an age in full_every (e.g. 7d): the lock lasts until a "
                         "purge could remove the object, one chain's age plus keep_days after it is written")
    return age + timedelta(days=keep_days)


def retain_until(written_at: datetime, span: timedelta) -> datetime:
    """The retain-until date of an object written at `written_at` (whole seconds, rounded up)."""
    until = written_at + span
    return until.replace(microsecond=0) + timedelta(seconds=math.ceil(until.microsecond / 1e6))


def required_until(ref: SetRef, span: timedelta) -> datetime:
    """The earliest retain-until date the policy accepts for an object of `ref`."""
    return ref.time + span


@dataclass(frozen=True)
class ShortLock:
    ref: SetRef
    key: str
    until: datetime | None  # None: not locked at all
    required: datetime

    @property
    def detail(self) -> str:
        have = "no lock" if self.until is None else f"locked until {format_ts(self.until)}"
        return f"{have}, the retention policy needs {format_ts(self.required)}"


def short_locks(ref: SetRef, locks: Mapping[str, datetime | None], span: timedelta) -> list[ShortLock]:
    """The objects of `ref` (key → retain-until date as stored, None when unlocked) locked for less than
    the policy needs."""
    need = required_until(ref, span)
    return [ShortLock(ref, key, until, need) for key, until in sorted(locks.items())
            if until is None or until < need]


def hold_locked(plan: PurgePlan, locks: Mapping[SetRef, datetime | None], now: datetime) -> PurgePlan:
    """The plan less what is still locked at `now` (`locks`: each expired set's retain-until date, None for
    none), which stays with its lock date in `plan.locked`.

    A locked full or increment keeps its snapshot's whole chain (a full is never removed from under a kept
    increment, nor an increment kept whose full goes); a locked commit-log batch stays alone. A snapshot
    that keeps a set keeps its schema."""
    until = {ref: when for ref, when in locks.items() if when is not None and when > now}
    if not until:
        return plan

    def group_lock(group: Group) -> datetime | None:
        return max((until[info.ref] for info in group.sets.values() if info.ref in until), default=None)

    chain_until: dict[datetime, datetime] = {}
    for group in plan.expired:
        if group.kind is not SetKind.COMMITLOG and (when := group_lock(group)) is not None:
            chain_until[group.snapshot_ts] = max(when, chain_until.get(group.snapshot_ts, when))
    locked = tuple((g, chain_until[g.snapshot_ts]) for g in plan.expired
                   if g.kind is not SetKind.COMMITLOG and g.snapshot_ts in chain_until) + \
        tuple((g, when) for g in plan.expired if g.kind is SetKind.COMMITLOG and (when := group_lock(g)) is not None)
    held = {id(g) for g, _ in locked}
    expired = tuple(g for g in plan.expired if id(g) not in held)
    still_held = {g.snapshot_ts for g, _ in locked}
    return replace(plan, expired=expired, bytes=sum(g.bytes for g in expired),
                   emptied_snapshots=tuple(ts for ts in plan.emptied_snapshots if ts not in still_held),
                   locked=plan.locked + locked)

def locked_line(group: Group, until: datetime) -> str:
    return (f"{KIND_NAMES[group.kind]} {format_ts(group.time)} (under {format_ts(group.snapshot_ts)}) "
            f"locked until {format_ts(until)}")
