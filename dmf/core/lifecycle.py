"""A repository's lifecycle (pure): when a chain ends and a new full starts (`full_every`), and which
sets a purge removes (`RetentionPolicy`) without touching anything a retained restore point needs.

A lineage is what one chain of backups is for: a db-target and a host set (the seed's rule). Every
lineage keeps its newest complete full, whatever the policy, so a purge never leaves a target without
a backup. What a restore to time T reads is `catalog.resolve_chain`: the newest complete full at or
before T, its increments up to T, and the commit-log batches shipped since that full. So keeping a
restore point means keeping its full's whole chain and every batch shipped since that full.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from dmf.core.catalog import KIND_NAMES, Catalog, Group
from dmf.core.errors import InputError, quote
from dmf.core.keys import SetKind, SetRef
from dmf.core.timestamps import format_ts

_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_SIZES = {"mib": 2**20, "gib": 2**30, "tib": 2**40}
_TERM = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[mhdw]|mib|gib|tib|increments?)", re.IGNORECASE)


@dataclass(frozen=True)
class FullEvery:
    """A chain ends (the next backup is a new full) at the first of: its full's age, its number of
    increments, the bytes of its increments. None of them set: chains never end by themselves."""

    age: timedelta | None = None
    increments: int | None = None
    increment_bytes: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> FullEvery:
        """`7d`, `12h`, `500 increments`, `64GiB`, or several joined by commas (`7d, 64GiB`); `never`
        or empty for none."""
        text = (text or "").strip()
        if text.lower() in ("", "never"):
            return cls()
        fields: dict[str, object] = {}
        for term in text.split(","):
            match = _TERM.fullmatch(term.strip())
            if match is None:
                raise InputError(f"invalid full_every term {quote(term.strip())}: expected e.g. 7d, 12h, "
                                 "500 increments, 64GiB (joined by commas), or never")
            number, unit = float(match["n"]), match["unit"].lower()
            if number <= 0:
                raise InputError(f"invalid full_every term {quote(term.strip())}: must be more than 0")
            if unit in _UNITS:
                name, value = "age", number * _UNITS[unit]
            elif unit in _SIZES:
                name, value = "increment_bytes", int(number * _SIZES[unit])
            else:
                if not number.is_integer():
                    raise InputError(f"invalid full_every term {quote(term.strip())}: a whole number of increments")
                name, value = "increments", int(number)
            if name in fields:
                raise InputError(f"full_every {quote(text)} gives the {name.replace('_', ' ')} limit twice")
            fields[name] = value
        return cls(**fields)

    def due(self, full: Group, increments: list[Group], now: datetime) -> str | None:
        """Why the chain of `full` (with its complete `increments`) has ended at `now`, or None."""
        if self.age is not None and now - full.time >= self.age:
            return f"its full is {_days(now - full.time)} old (full_every {_days(self.age)})"
        if self.increments is not None and len(increments) >= self.increments:
            return f"it has {len(increments)} increments (full_every {self.increments} increments)"
        grown = sum(g.bytes for g in increments)
        if self.increment_bytes is not None and grown >= self.increment_bytes:
            return f"its increments hold {grown / 2**30:.2f} GiB (full_every {self.increment_bytes / 2**30:g} GiB)"
        return None


def _days(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 24 else f"{hours:.3g} hours"


def lineage(group: Group) -> tuple[str, frozenset[str]]:
    return group.db_target, frozenset(group.hosts)


@dataclass(frozen=True)
class RetentionPolicy:
    """What a purge keeps: the newest `keep_fulls` complete fulls of each lineage, and every restore
    point in the last `keep_days` days. Either may be None; a purge needs at least one."""

    keep_fulls: int | None = None
    keep_days: float | None = None

    def __post_init__(self) -> None:
        if self.keep_fulls is None and self.keep_days is None:
            raise InputError("no retention policy: set keep_fulls or keep_days (repository block or flags)")
        if self.keep_fulls is not None and self.keep_fulls < 1:
            raise InputError(f"keep_fulls must be at least 1, not {self.keep_fulls}")
        if self.keep_days is not None and self.keep_days <= 0:
            raise InputError(f"keep_days must be more than 0, not {self.keep_days:g}")

    def describe(self) -> str:
        parts = ([f"the last {self.keep_fulls} full(s) of each target and host set"] if self.keep_fulls else []) + \
                ([f"every restore point of the last {self.keep_days:g} day(s)"] if self.keep_days else [])
        return " and ".join(parts)


@dataclass(frozen=True)
class PurgePlan:
    """What a purge removes, in the order it must go. `manifests_first` are the sets whose manifest is
    deleted before any data (newest increments and batches first, fulls last), so a purge cut off midway
    never leaves an increment listed complete without its full; then every listed set's objects go."""

    retained: tuple[Group, ...]          # fulls kept, complete or partial (their chains kept whole)
    expired: tuple[Group, ...]           # complete groups removed, in manifest-deletion order
    abandoned: tuple[SetRef, ...]        # sets of failed runs past the grace that no kept restore point would read
    keep_commitlogs_from: datetime | None  # batches shipped before this are removed
    bytes: int                           # what the expired groups hold (from their manifests)
    emptied_snapshots: tuple[datetime, ...]  # snapshot prefixes left with no set: their index and schema go
    damaged: tuple[Group, ...] = ()      # partial groups it leaves (whole, or their unreadable manifests)
    locked: tuple[tuple[Group, datetime], ...] = ()  # expired groups kept for their object lock, and until when

    def counts(self) -> dict[str, int]:
        """Complete groups removed, by kind name (full, incremental, commitlog)."""
        return {KIND_NAMES[kind]: sum(1 for g in self.expired if g.kind is kind) for kind in SetKind}

    @property
    def sets(self) -> list[SetRef]:
        """Every set the purge removes, in deletion order."""
        return [info.ref for group in self.expired for info in group.sets.values()] + list(self.abandoned)


def _kept(fulls: list[Group], policy: RetentionPolicy, now: datetime) -> list[Group]:
    """Of one lineage's fulls (oldest first), those the policy keeps."""
    keep = {id(fulls[-1]): fulls[-1]}  # a lineage never loses its newest full
    if policy.keep_fulls:
        keep.update((id(f), f) for f in fulls[-policy.keep_fulls:])
    if policy.keep_days:
        window_start = now - timedelta(days=policy.keep_days)
        older = [f for f in fulls if f.time <= window_start]
        # The full that serves the window's first second, and every later one.
        keep.update((id(f), f) for f in fulls if f.time > window_start or (older and f is older[-1]))
    return list(keep.values())


def retained_fulls(catalog: Catalog, policy: RetentionPolicy, now: datetime) -> list[Group]:
    """The complete fulls the policy keeps, and every partial full (Group.partial: a failed run, or a
    damaged or lost manifest) it would keep were that full complete. Both are taken, so a manifest
    damaged or lost never makes a purge remove more, and the last complete full before a kept partial
    one (what a restore to its days now resolves to) stays too: it is among the complete ones kept."""
    complete: dict[tuple[str, frozenset[str]], list[Group]] = {}
    claimed: dict[tuple[str, frozenset[str]], list[Group]] = {}
    for full in catalog.fulls:  # oldest first
        if full.complete:
            complete.setdefault(lineage(full), []).append(full)
        if full.complete or full.partial:
            claimed.setdefault(lineage(full), []).append(full)
    kept = {id(f): f for fulls in [*complete.values(), *claimed.values()] for f in _kept(fulls, policy, now)}
    return sorted(kept.values(), key=lambda g: g.time)


def purge_plan(catalog: Catalog, policy: RetentionPolicy, now: datetime, grace: timedelta,
               snapshots: Iterable[datetime] = ()) -> PurgePlan:
    """What `backup purge` removes from `catalog` (every set of the repository) at `now`; `snapshots`
    are the times of every snapshot prefix in the bucket, with or without sets. A group a kept restore
    point would read were it complete is never touched, complete or not: its chain is kept, or (a
    batch) it was shipped since the oldest full kept."""
    retained = retained_fulls(catalog, policy, now)
    kept_snapshots = {g.snapshot_ts for g in retained}
    oldest_kept = min((g.time for g in retained), default=None)

    def needed(group: Group) -> bool:
        if group.kind is SetKind.COMMITLOG:
            # resolve_chain takes every batch shipped since the full, under whatever snapshot it sits.
            return oldest_kept is not None and group.time >= oldest_kept
        return group.snapshot_ts in kept_snapshots

    expired_fulls = [g for g in catalog.fulls if g.complete and not needed(g)]
    expired_others = [g for g in [*catalog.increments, *catalog.commitlogs] if g.complete and not needed(g)]
    newest_first = lambda groups: sorted(groups, key=lambda g: g.time, reverse=True)  # noqa: E731
    expired = [*newest_first(expired_others), *newest_first(expired_fulls)]
    # A set with an unreadable manifest is never removed: the operator's to look at (verify names it).
    abandoned = [info.ref for group in catalog.all_groups() if not group.complete and not needed(group)
                 for info in group.sets.values()
                 if not info.problem and info.ref.time < now - grace]
    gone = {info.ref.prefix for g in expired for info in g.sets.values()} | {ref.prefix for ref in abandoned}
    with_sets = {info.ref.snapshot_ts for g in catalog.all_groups() for info in g.sets.values()}
    still_held = {info.ref.snapshot_ts for g in catalog.all_groups() for info in g.sets.values()
                  if info.ref.prefix not in gone}
    # A snapshot this purge empties loses its schema and index with its last set. One that holds no set
    # at all (a rerun after a purge cut off before that delete, or a backup that wrote its schema and
    # has not sealed a set yet) loses them only past the grace.
    emptied = sorted((with_sets - still_held) | {ts for ts in snapshots if ts not in with_sets and ts < now - grace})
    damaged = [g for g in catalog.all_groups() if g.partial
               and any(info.ref.prefix not in gone for info in g.sets.values())]
    return PurgePlan(tuple(retained), tuple(expired), tuple(abandoned), oldest_kept,
                     sum(g.bytes for g in expired), tuple(emptied), tuple(damaged))


def damage_line(group: Group) -> str:
    """A partial backup a purge leaves, as its report names it."""
    sets = [(h, group.sets.get(h)) for h in group.unsealed]
    hosts = "; ".join(f"{h}: {'unreadable manifest' if s and s.problem else 'no manifest' if s else 'no set'}"
                      for h, s in sets)
    return (f"{KIND_NAMES[group.kind]} {format_ts(group.time)} (under {format_ts(group.snapshot_ts)}) is not "
            f"complete ({hosts}): a run that failed there, or a manifest damaged or lost since; "
            "`dmf backup verify` names it")
