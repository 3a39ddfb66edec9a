"""The backup history as the bucket tells it: sets grouped into backups, completeness, and
the snapshot chain a restore needs. Pure: the listing is done elsewhere and handed in.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dmf.core.errors import InputError, quote
from dmf.core.keys import SetKind, SetRef
from dmf.core.manifest import Manifest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts, parse_ts

# Node clocks (segment close times) and the manager's clock (snapshot times) may disagree by this
# much; a segment is left out of a restore only when it closed this long before the snapshot.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=10)
SEGMENTS_CLOSED_AT = "segments_closed_at"  # manifest `extra` of a commit-log batch: segment → close time


@dataclass(frozen=True)
class SetSummary:
    """What listing a set needs of its manifest: read from the manifest, or from the catalog index."""

    host: str
    host_id: str
    created_at: datetime
    db_target: str
    hosts: tuple[str, ...]
    files: int
    bytes: int

    @classmethod
    def of(cls, manifest: Manifest) -> SetSummary:
        return cls(manifest.host, manifest.host_id, manifest.created_at, manifest.db_target,
                   tuple(str(h) for h in manifest.hosts), len(manifest.files), manifest.total_bytes)


@dataclass(frozen=True)
class SetInfo:
    """One set as listed. Complete when its manifest was read, whole (`manifest`, Repository.catalog)
    or as a summary (the catalog index): test `complete`, never `manifest is None`. Equality is the
    listing's view (ref and summary), so a catalog read from the index equals one read from the manifests."""

    ref: SetRef
    manifest: Manifest | None = field(default=None, compare=False)
    summary: SetSummary | None = None
    problem: str = ""  # why a set with a manifest object is not complete (a malformed manifest)

    def __post_init__(self) -> None:
        if self.manifest is not None and self.summary is None:
            object.__setattr__(self, "summary", SetSummary.of(self.manifest))

    @property
    def complete(self) -> bool:
        return self.summary is not None


@dataclass
class Group:
    """The sets one run wrote at one time: a full snapshot or an increment across hosts."""

    kind: SetKind
    snapshot_ts: datetime
    time: datetime
    sets: dict[str, SetInfo] = field(default_factory=dict)  # node → set

    @property
    def manifests(self) -> list[Manifest]:
        """The complete sets' whole manifests, which a catalog read from the index does not hold."""
        if any(s.complete and s.manifest is None for s in self.sets.values()):
            raise LookupError(f"the {self.kind.value} of {format_ts(self.snapshot_ts)} was listed from the "
                              "catalog index, which holds summaries only (read it with Repository.catalog)")
        return [s.manifest for s in self.sets.values() if s.manifest is not None]

    @property
    def summaries(self) -> list[SetSummary]:
        return [s.summary for s in self.sets.values() if s.summary is not None]

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host set the run was for (from any manifest), else the nodes seen."""
        for summary in self.summaries:
            if summary.hosts:
                return summary.hosts
        return tuple(sorted(self.sets))

    @property
    def db_target(self) -> str:
        return next((s.db_target for s in self.summaries), "")

    @property
    def complete(self) -> bool:
        summaries = self.summaries
        if not summaries or len(summaries) != len(self.sets):
            return False
        if self.kind is SetKind.COMMITLOG:
            return True
        return all(h in self.sets and self.sets[h].complete for h in self.hosts)

    @property
    def partial(self) -> bool:
        """Not complete, though some host sealed its set or wrote a manifest that cannot be read: a run
        that failed on a host, or a backup whose manifest was damaged or lost since. The bucket cannot
        tell them apart, so nothing may treat it as less than the backup it may have been."""
        return not self.complete and any(s.complete or s.problem for s in self.sets.values())

    @property
    def unsealed(self) -> list[str]:
        """The hosts of the run without a complete set (no set at all, no manifest, or an unreadable one)."""
        nodes = self.hosts if self.kind is not SetKind.COMMITLOG else tuple(self.sets)
        return [h for h in nodes if h not in self.sets or not self.sets[h].complete]

    @property
    def files(self) -> int:
        return sum(s.files for s in self.summaries)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.summaries)

    @property
    def problems(self) -> list[str]:
        return [s.problem for s in self.sets.values() if s.problem]


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


KIND_NAMES = {SetKind.SNAPSHOT: "full", SetKind.INCREMENTAL: "incremental", SetKind.COMMITLOG: "commitlog"}


def parse_kind(name: str) -> SetKind:
    """A kind as `backup list --kind` names it."""
    for kind, kind_name in KIND_NAMES.items():
        if name == kind_name:
            return kind
    raise InputError(f"invalid --kind {quote(name)}: expected {', '.join(KIND_NAMES.values())}")


def holds_any_of(backup_target: str, wanted: DbTarget) -> bool:
    """Whether a backup taken for `backup_target` holds any data of `wanted` (`backup list --db-target`):
    a backup of everything or of the keyspace holds the table's; a table's backup holds part of its keyspace."""
    return covers(backup_target, wanted) or covers(str(wanted), DbTarget.parse(backup_target or None))


def listed(catalog: Catalog, start: datetime | None = None, end: datetime | None = None,
           kind: SetKind | None = None, target: DbTarget = DbTarget()) -> list[Group]:
    """What `backup list` shows: the groups whose time is in [start, end], of `kind`, holding any data of `target`."""
    return [g for g in catalog.all_groups()
            if (start is None or g.time >= start) and (end is None or g.time <= end)
            and (kind is None or g.kind is kind) and holds_any_of(g.db_target, target)]


@dataclass(frozen=True)
class ChainSummary:
    """A complete full snapshot with what extends it, as `backup list` shows it."""

    bytes: int                  # the full and its complete increments
    restorable_from: datetime   # the full's time
    restorable_until: datetime  # its last complete increment or, if later, the last time every one of
                                # its hosts has shipped commit logs under it


def chain_summaries(catalog: Catalog) -> dict[datetime, ChainSummary]:
    """Per complete full snapshot (by its snapshot_ts: one full per snapshot), its chain's size and
    restorable window. Commit logs count up to the host that shipped least recently, since a restore
    to a later time would miss the others' writes since their last batch."""
    increments: dict[datetime, list[Group]] = defaultdict(list)
    for group in catalog.increments:
        if group.complete:
            increments[group.snapshot_ts].append(group)
    last_shipped: dict[tuple[datetime, str], datetime] = {}  # (snapshot_ts, host address) → newest batch
    for group in catalog.commitlogs:  # oldest first, so the newest batch is kept
        if group.complete:
            for summary in group.summaries:
                last_shipped[(group.snapshot_ts, summary.host)] = group.time
    chains = {}
    for full in catalog.fulls:
        if not full.complete:
            continue
        own = increments[full.snapshot_ts]
        until = own[-1].time if own else full.time
        shipped = [last_shipped.get((full.snapshot_ts, host)) for host in full.hosts]
        if all(shipped):
            until = max(until, min(shipped))
        chains[full.snapshot_ts] = ChainSummary(full.bytes + sum(g.bytes for g in own), full.time, until)
    return chains


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

    A segment is shipped after it closes, so writes before `at` can sit in a batch shipped after
    `at`, possibly under a later snapshot: per host_id, every batch since the full snapshot up to
    and including the first one after `at` that holds a segment closed after `at` is returned (the
    replay's restore point drops what is later).
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
        if group.time > at and _reaches_past(group, at):
            past_at.add(node)
    return Chain(full, increments, tuple(batches))


def _reaches_past(batch: Group, at: datetime) -> bool:
    """Whether a batch holds a write made after `at`, so later batches cannot hold any made before: one of
    its segments closed (or its CDC prefix was durable) after `at`. A batch shipped after `at` may hold
    only what closed before it (a continuous shipper's prefix of the active segment, read at a sync before
    `at`); batches without close times are taken to reach past `at`, as their shipping time says."""
    try:
        manifests = batch.manifests
    except LookupError:  # listed from the catalog index (summaries): judged by its shipping time alone
        return True
    closes = [c for m in manifests for c in m.extra.get(SEGMENTS_CLOSED_AT, {}).values()]
    return not closes or any(parse_ts(c, name="segment close time") > at for c in closes)


def segment_needed(batch: Manifest, segment: str, full: Group) -> bool:
    """Whether a shipped segment can hold writes the full snapshot lacks: every write in a segment
    that closed before the snapshot was flushed into it. Batches without close times keep all."""
    closed = batch.extra.get(SEGMENTS_CLOSED_AT, {}).get(segment)
    return closed is None or parse_ts(closed, name="segment close time") >= full.time - CLOCK_SKEW_ALLOWANCE
