"""The long-lived commit-log shipper's decisions (pure): when a batch is sealed, when a run hands
over, what a restarted shipper still has to ship, and each node's recovery point and its lag.

A run ships every segment as soon as the node's agent sees it archived, into the node's open batch,
and seals that batch SEAL_EVERY_S after its first segment went up: the recovery point is a sealed
batch (a restore reads complete batches only). Each run lives a bounded time and stops at a
schedule tick, where the run the schedule starts then takes over.

Heartbeats: each node's shipper writes `shipper/<cluster>/<host_id>.json` (dmf.core.keys) every
HEARTBEAT_EVERY_S and after each seal, with its recovery point: every write made before it is in a
sealed batch (the close time of the newest sealed segment with no older one unsealed). The writes
after it are in the segment Cassandra still writes, or in one not yet sealed.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from dmf.core.errors import LayoutError
from dmf.core.timestamps import format_ts, parse_ts

SEAL_EVERY_S = 2.0
# CDC: the active segment's durable prefix is shipped at most this often (Cassandra moves it on each
# commit-log sync: every commitlog_sync_period, 10 s by default, in periodic mode).
CDC_EVERY_S = 3.0
SEGMENT_PREFIXES = "segment_prefixes"  # batch manifest `extra`: segment → bytes of its durable prefix shipped
LIFETIME_S = 3600
HEARTBEAT_EVERY_S = 5.0
# A batch this full is sealed at once: its manifest stays small, and one seal never waits on a backlog.
MAX_BATCH_SEGMENTS = 64
# Status flags a node whose recovery point lags more than this, or whose shipper is silent this long.
LAG_THRESHOLD = timedelta(minutes=5)
SILENT_AFTER = timedelta(seconds=HEARTBEAT_EVERY_S * 6)


def shipper_lease_name(cluster_name: str) -> str:
    """The name the shipper's own lease goes by: not the cluster's (backups and purges hold that one
    for minutes; the shipper holds its own for an hour)."""
    return f"{cluster_name} commit-log shipper"


def batch_time(now: datetime, previous: datetime | None) -> datetime:
    """A new batch's time: now to the second, and later than the previous batch of the node (batch keys
    are to the second, so two batches of one second would share a prefix)."""
    now = now.replace(microsecond=0)
    return now if previous is None or now > previous else previous + timedelta(seconds=1)


def seal_due(opened_at: float | None, segments: int, now: float, seal_every_s: float = SEAL_EVERY_S,
             max_segments: int = MAX_BATCH_SEGMENTS) -> bool:
    """Whether the open batch (opened at `opened_at` on a monotonic clock, holding `segments`) is sealed now."""
    if opened_at is None or segments == 0:
        return False
    return segments >= max_segments or now - opened_at >= seal_every_s


def end_of_life(started: datetime, lifetime_s: float, tick_s: int = 60) -> datetime:
    """When a run that started at `started` stops: `lifetime_s` later, at the next schedule tick (the
    shipper's deployment starts a run every `tick_s`), so its successor starts as it leaves."""
    end = started.timestamp() + lifetime_s
    return datetime.fromtimestamp(math.ceil(end / tick_s) * tick_s, started.tzinfo)


def to_ship(archived: Iterable[tuple[str, int]], shipped: dict[str, int]) -> tuple[list[str], list[str]]:
    """(already shipped, still to ship) among archived (name, size): a segment is shipped once a sealed
    batch holds it with its size. A successor of a crashed run deletes the first and ships the second, so
    it loses nothing (a segment leaves the node only once sealed) and seals nothing twice."""
    done, pending = [], []
    for name, size in archived:
        (done if shipped.get(name) == size else pending).append(name)
    return done, pending


def prefix_due(offset: int, shipped: int, completed: bool, last_shipped: float | None, now: float,
               every_s: float = CDC_EVERY_S) -> bool:
    """Whether a CDC segment's durable prefix (`offset` bytes, as its `_cdc.idx` says) is shipped now: when
    it grew past the prefix shipped last (`shipped` bytes, at `last_shipped` on a monotonic clock), at
    most every `every_s`. A completed segment is not: Cassandra archives it whole, and that ships."""
    if completed or offset <= shipped:
        return False
    return last_shipped is None or now - last_shipped >= every_s


def drainable(cdc: dict[str, tuple[int, bool]], sealed: dict[str, int]) -> list[str]:
    """The segments of cdc_raw (name → durable offset and whether completed, from its `_cdc.idx`) that
    dmf may delete there: completed, and sealed in a copy at least as long as that offset (the archived
    segment, or a prefix up to its end). Until then cdc_raw keeps them, and counts them against
    cdc_total_space."""
    return sorted(name for name, (offset, completed) in cdc.items() if completed and sealed.get(name, -1) >= offset)


T = TypeVar("T")


def keep_longest(items: Sequence[T], key: Callable[[T], Hashable], size: Callable[[T], int]) -> list[T]:
    """Of the sealed copies of each segment (`key`: node and segment name), the longest, in the items'
    order: a later upload of the same segment (a longer CDC prefix, or the closed segment) supersedes
    an earlier prefix; every prefix starts where the segment does, so the longest holds all the others."""
    best: dict[Hashable, int] = {}
    for index, item in enumerate(items):
        k = key(item)
        if k not in best or size(item) > size(items[best[k]]):
            best[k] = index
    keep = set(best.values())
    return [item for index, item in enumerate(items) if index in keep]


def recovery_point(previous: datetime | None, sealed: Iterable[datetime],
                   unsealed: Iterable[datetime]) -> datetime | None:
    """The newest close time of a sealed segment with no unsealed segment closed before it (the close
    times of what is sealed and of what is archived but not yet sealed), never earlier than `previous`."""
    oldest_unsealed = min(unsealed, default=None)
    candidates = [t for t in sealed if oldest_unsealed is None or t < oldest_unsealed]
    best = max(candidates, default=None)
    if previous is None:
        return best
    return previous if best is None or best < previous else best


@dataclass(frozen=True)
class Heartbeat:
    """What a node's shipper last said of itself."""

    host: str
    host_id: str
    beat_at: datetime
    recovery_point: datetime | None
    unsealed: int            # segments archived and seen, not yet in a sealed batch
    holder: str              # the flow run that ships
    until: datetime          # when that run hands over

    def to_json(self) -> bytes:
        return json.dumps({"host": self.host, "host_id": self.host_id, "beat_at": format_ts(self.beat_at),
                           "recovery_point": format_ts(self.recovery_point) if self.recovery_point else None,
                           "unsealed": self.unsealed, "holder": self.holder, "until": format_ts(self.until)}).encode()

    @classmethod
    def from_json(cls, key: str, data: bytes) -> Heartbeat:
        try:
            doc = json.loads(data)
            point = doc["recovery_point"]
            return cls(str(doc["host"]), str(doc["host_id"]), parse_ts(doc["beat_at"]),
                       parse_ts(point) if point else None, int(doc["unsealed"]), str(doc["holder"]),
                       parse_ts(doc["until"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise LayoutError(f"{key}: not a shipper heartbeat ({exc})") from None


def lag(now: datetime, beat: Heartbeat) -> timedelta | None:
    """The node's recovery-point lag: what a disaster now would lose at most (None: nothing sealed yet)."""
    return None if beat.recovery_point is None else max(timedelta(0), now - beat.recovery_point)


def lag_flags(now: datetime, beat: Heartbeat, threshold: timedelta = LAG_THRESHOLD) -> list[str]:
    """Why a node's shipping needs a look: a silent shipper, or a recovery point too far behind."""
    flags = []
    if now - beat.beat_at > SILENT_AFTER:
        flags.append(f"shipper silent for {(now - beat.beat_at).total_seconds():.0f} s")
    behind = lag(now, beat)
    if behind is not None and behind > threshold:
        flags.append(f"recovery point {behind.total_seconds():.0f} s behind (threshold "
                     f"{threshold.total_seconds():.0f} s)")
    return flags
