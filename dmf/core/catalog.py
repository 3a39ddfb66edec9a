"""The backup history as the bucket tells it: sets grouped into backups, completeness, and
the snapshot chain a restore needs. Pure: the listing is done elsewhere and handed in.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dmf.core.keys import SetKind, SetRef
from dmf.core.manifest import Manifest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import parse_ts

# Node clocks (segment close times) and the manager's clock (snapshot times) may disagree by this
# much; a segment is left out of a restore only when it closed this long before the snapshot.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=10)
SEGMENTS_CLOSED_AT = "segments_closed_at"  # manifest `extra` of a commit-log batch: segment → close time


@dataclass(frozen=True)
class SetInfo:
    ref: SetRef
    manifest: Manifest | None  # None: objects without a manifest, i.e. incomplete

    @property
    def complete(self) -> bool:
        return self.manifest is not None


@dataclass
class Group:
    """The sets one run wrote at one time: a full snapshot or an increment across hosts."""

    kind: SetKind
    snapshot_ts: datetime
    time: datetime
    sets: dict[str, SetInfo] = field(default_factory=dict)  # node → set

    @property
    def manifests(self) -> list[Manifest]:
        return [s.manifest for s in self.sets.values() if s.manifest is not None]

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host set the run was for (from any manifest), else the nodes seen."""
        for manifest in self.manifests:
            if manifest.hosts:
                return manifest.hosts
        return tuple(sorted(self.sets))

    @property
    def db_target(self) -> str:
        return next((m.db_target for m in self.manifests), "")

    @property
    def complete(self) -> bool:
        manifests = self.manifests
        if not manifests or len(manifests) != len(self.sets):
            return False
        if self.kind is SetKind.COMMITLOG:
            return True
        return all(h in self.sets and self.sets[h].complete for h in self.hosts)

    @property
    def files(self) -> int:
        return sum(len(m.files) for m in self.manifests)

    @property
    def bytes(self) -> int:
        return sum(m.total_bytes for m in self.manifests)


@dataclass
class Catalog:
    fulls: list[Group]
    increments: list[Group]
    commitlogs: list[Group]

    @classmethod
    def build(cls, sets: Iterable[SetInfo]) -> Catalog:
        groups: dict[tuple, Group] = {}
        for info in sets:
            ref = info.ref
            key = (ref.kind, ref.snapshot_ts, ref.time) if ref.kind is not SetKind.COMMITLOG else \
                (ref.kind, ref.snapshot_ts, ref.time, ref.node)
            group = groups.setdefault(key, Group(ref.kind, ref.snapshot_ts, ref.time))
            group.sets[ref.node] = info
        by_kind: dict[SetKind, list[Group]] = defaultdict(list)
        for group in groups.values():
            by_kind[group.kind].append(group)
        order = lambda g: (g.time, g.snapshot_ts)  # noqa: E731
        return cls(sorted(by_kind[SetKind.SNAPSHOT], key=order),
                   sorted(by_kind[SetKind.INCREMENTAL], key=order),
                   sorted(by_kind[SetKind.COMMITLOG], key=order))

    def all_groups(self) -> list[Group]:
        return sorted([*self.fulls, *self.increments, *self.commitlogs], key=lambda g: (g.time, g.kind.value))

    def latest_full_for_backup(self, db_target: DbTarget, hosts: Iterable[str]) -> Group | None:
        """The seed's rule: the newest complete full snapshot of exactly this db-target and host set."""
        wanted = set(hosts)
        matches = [g for g in self.fulls
                   if g.complete and g.db_target == str(db_target) and set(g.hosts) == wanted]
        return matches[-1] if matches else None

    def latest_full_any(self, node_hosts: Iterable[str] = ()) -> Group | None:
        """Newest complete full snapshot (any target), optionally one that includes all `node_hosts`."""
        needed = set(node_hosts)
        matches = [g for g in self.fulls if g.complete and needed <= set(g.hosts)]
        return matches[-1] if matches else None

    def increments_of(self, full: Group, until: datetime | None = None) -> list[Group]:
        return [g for g in self.increments if g.snapshot_ts == full.snapshot_ts and g.complete
                and (until is None or g.time <= until)]


def covers(backup_target: str, wanted: DbTarget) -> bool:
    """Whether a backup taken for `backup_target` holds the data of `wanted`."""
    taken = DbTarget.parse(backup_target or None)
    if taken.keyspace is None:
        return True
    if taken.keyspace != wanted.keyspace:
        return False
    return taken.table is None or taken.table == wanted.table


@dataclass(frozen=True)
class Chain:
    full: Group
    increments: tuple[Group, ...]
    commitlogs: tuple[Group, ...]

    @property
    def manifests(self) -> list[Manifest]:
        return [m for g in (self.full, *self.increments) for m in g.manifests]


def resolve_chain(catalog: Catalog, target: DbTarget, at: datetime) -> Chain | None:
    """The latest complete full snapshot at or before `at` covering `target`, its complete
    increments up to `at`, and the commit-log batches that can hold writes up to `at`.

    A segment is shipped after it closes, so writes before `at` can sit in the first batch
    shipped after `at`, possibly under a later snapshot: per host_id, every batch since the
    full snapshot up to and including the first one after `at` is returned (the replay's
    restore point drops what is later).
    """
    fulls = [g for g in catalog.fulls if g.complete and g.time <= at and covers(g.db_target, target)]
    if not fulls:
        return None
    full = fulls[-1]
    increments = tuple(catalog.increments_of(full, until=at))
    batches: list[Group] = []
    past_at: set[str] = set()
    for group in catalog.commitlogs:
        # By shipping time, not parent snapshot: a batch shipped while `full` was being taken
        # may sit under the previous snapshot.
        if not group.complete or group.time < full.time:
            continue
        (node,) = group.sets
        if node in past_at:
            continue
        batches.append(group)
        if group.time > at:
            past_at.add(node)
    return Chain(full, increments, tuple(batches))


def segment_needed(batch: Manifest, segment: str, full: Group) -> bool:
    """Whether a shipped segment can hold writes the full snapshot lacks: every write in a segment
    that closed before the snapshot was flushed into it. Batches without close times keep all."""
    closed = batch.extra.get(SEGMENTS_CLOSED_AT, {}).get(segment)
    return closed is None or parse_ts(closed, name="segment close time") >= full.time - CLOCK_SKEW_ALLOWANCE
