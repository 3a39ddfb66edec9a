"""Copies of a repository in other repositories (pure): which sets a copy run brings over, how far a
copy lags behind its primary, and which copies hold a given set. The reads and writes are dmf.copy's.

A copy holds the primary's sets byte for byte (the same keys, the same manifests), so every command
reads it as it reads the primary. It keeps its own retention: a copy run never brings back a set the
copy's own purge would remove, or the two would undo each other's work on every run.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from dmf.core.catalog import Catalog
from dmf.core.errors import InputError, quote
from dmf.core.keys import SetKind, SetRef
from dmf.core.lifecycle import RetentionPolicy, purge_plan
from dmf.core.timestamps import format_ts

# Fulls first within a second: a copy cut off midway then holds a chain's full before its increments.
_KIND_ORDER = {SetKind.SNAPSHOT: 0, SetKind.INCREMENTAL: 1, SetKind.COMMITLOG: 2}


def complete_sets(catalog: Catalog) -> set[SetRef]:
    return {info.ref for group in catalog.all_groups() for info in group.sets.values() if info.complete}


def sets_to_copy(primary: Catalog, copy: Catalog, copy_policy: RetentionPolicy | None = None,
                 now: datetime | None = None, grace: timedelta = timedelta(days=1)) -> list[SetRef]:
    """Every set complete on the primary and not on the copy, oldest first (a full before its increments),
    less those the copy's own retention policy (if it has one) would purge at `now`."""
    wanted = complete_sets(primary) - complete_sets(copy)
    if copy_policy is not None and now is not None:
        wanted -= set(purge_plan(primary, copy_policy, now, grace).sets)
    return sorted(wanted, key=lambda ref: (ref.time, _KIND_ORDER[ref.kind], ref.snapshot_ts, ref.node))


@dataclass(frozen=True)
class CopyLag:
    """How far a copy is behind its primary: the complete sets it lacks (of those it should hold)."""

    copy: str
    missing: int
    oldest_missing: datetime | None   # the time of the oldest set not copied yet
    newest_copied: datetime | None    # the newest set the copy holds

    def lag(self, now: datetime) -> timedelta:
        """Zero when up to date, else the age of the oldest set not copied yet."""
        return timedelta(0) if self.oldest_missing is None else now - self.oldest_missing

    def describe(self, now: datetime) -> str:
        if self.oldest_missing is None:
            newest = format_ts(self.newest_copied) if self.newest_copied else "nothing to copy yet"
            return f"copy {self.copy}: up to date (newest set {newest})"
        hours = self.lag(now).total_seconds() / 3600
        return (f"copy {self.copy}: {self.missing} set(s) not copied yet, the oldest taken "
                f"{format_ts(self.oldest_missing)} ({hours:.1f} h behind)")


def copy_lag(name: str, primary: Catalog, copy: Catalog, copy_policy: RetentionPolicy | None = None,
             now: datetime | None = None) -> CopyLag:
    missing = sets_to_copy(primary, copy, copy_policy, now)
    held = complete_sets(copy)
    return CopyLag(name, len(missing), missing[0].time if missing else None,
                   max((ref.time for ref in held), default=None))


def holders(wanted: Iterable[SetRef], copies: Mapping[str, Catalog]) -> list[str]:
    """The copies (by block name) that hold every one of the `wanted` sets complete."""
    wanted = set(wanted)
    return sorted(name for name, catalog in copies.items() if wanted <= complete_sets(catalog))


def copies_line(what: str, names: list[str]) -> str:
    """The one line a restore says when the primary cannot serve it: no silent fallback to a copy."""
    if not names:
        return f"{what}; no copy holds it"
    return (f"{what}; copies that hold it: {', '.join(names)} "
            f"(restore from one with --repository-block {names[0]})")


def copy_targets(copy_to: Iterable[str], to: str | None, primary: str) -> list[str]:
    """The copies a run writes: `to` alone (one of the primary's copy_to, or any other block), else all of
    copy_to. A repository is never its own copy."""
    targets = [to] if to else list(dict.fromkeys(copy_to))
    if not targets:
        raise InputError(f"repository block {quote(primary)} names no copy (copy_to) and no --to was given")
    if primary in targets:
        raise InputError(f"repository block {quote(primary)} cannot be a copy of itself")
    return targets
