"""The cluster lease in the bucket (pure): one writing run per cluster, whichever Prefect server runs it.

    leases/<cluster_slug>/<acquired_ts>-<token>.json (dmf.core.keys)    {"holder", "acquired_at", "expires_at", "ttl_s"}

S3-compatible stores do not all enforce conditional writes (s3proxy accepts `If-None-Match: *` and
ignores it), so the lease rests on write-then-list instead: a run writes its own lease object,
then lists the cluster's leases, and proceeds only if no other lease there is in force; otherwise
it deletes its own and tries again later. With read-after-write consistent listings (AWS S3 since
2020, s3proxy, MinIO, Ceph), of two runs racing, at least the later-listing one sees the other,
so two never both proceed (both may back off; jittered retries break the tie).

Clocks. A waiter judges another lease by the store's clock alone: the other lease's LastModified
plus its TTL, against its own lease's LastModified in the same listing (the store's "now"), so the
hosts' wall clocks never meet. The holder judges its own lease by its monotonic clock: held until
TTL after the start of its last successful write. Each side gives away SKEW_S (the store's
one-second LastModified, a store whose nodes' clocks differ, a monotonic clock running at another
rate than the store's): the holder stops SKEW_S before the TTL, a waiter takes over SKEW_S after
it, so a holder stops before anyone can think its lease has lapsed. `expires_at` is written fresh
on every write, in the writer's clock, for people reading the lease; no rule reads it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from dmf.core.errors import InputError, LayoutError, quote
from dmf.core.keys import lease_key
from dmf.core.timestamps import format_ts, parse_ts

# A crashed holder blocks the cluster this long after its last renewal (plus SKEW_S). Prefect's
# concurrency slot takes 60 s at the least, and holds the same TTL.
DEFAULT_TTL_S = 60
SKEW_S = 10
# After a failed renewal, try again this soon: the holder has TTL - SKEW_S from its last write.
RETRY_RENEWAL_S = 5


@dataclass(frozen=True)
class Lease:
    key: str
    holder: str          # what runs: a Prefect flow run, or a process on a host
    acquired_at: datetime
    expires_at: datetime  # the writer's clock, for people: rules use stored_at + ttl_s
    ttl_s: int
    stored_at: datetime | None = None  # the store's LastModified, once read back from a listing

    @classmethod
    def new(cls, cluster_name: str, holder: str, token: str, now: datetime, ttl_s: int) -> Lease:
        return cls(lease_key(cluster_name, now, token), holder, now, now + timedelta(seconds=ttl_s), ttl_s)

    def renewed(self, now: datetime) -> Lease:
        """The document of the next write: a fresh expiry, from the time of that write."""
        return replace(self, expires_at=now + timedelta(seconds=self.ttl_s), stored_at=None)

    def to_json(self) -> bytes:
        return json.dumps({"holder": self.holder, "acquired_at": format_ts(self.acquired_at),
                           "expires_at": format_ts(self.expires_at), "ttl_s": self.ttl_s}).encode()

    @classmethod
    def from_json(cls, key: str, data: bytes, stored_at: datetime | None = None) -> Lease:
        try:
            doc = json.loads(data)
            acquired, expires = parse_ts(doc["acquired_at"]), parse_ts(doc["expires_at"])
            # A lease written before ttl_s was recorded: its span, which only overstates the TTL.
            ttl = doc.get("ttl_s", (expires - acquired).total_seconds())
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
                raise ValueError(f"ttl_s {ttl!r}")
            return cls(key, str(doc["holder"]), acquired, expires, int(ttl),
                       parse_ts(stored_at) if stored_at is not None else None)
        except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
            raise LayoutError(f"lease {quote(key)} is not a dmf lease: {exc}") from None

    def in_force(self, store_now: datetime) -> bool:
        """Whether a waiter must still respect this lease, judged on the store's clock."""
        assert self.stored_at is not None, "only a lease read back from the store is judged"
        return store_now < self.stored_at + timedelta(seconds=self.ttl_s + SKEW_S)

    def describe(self) -> str:
        return (f"{self.holder} holds it since {format_ts(self.acquired_at)} UTC "
                f"(until {format_ts(self.expires_at)} UTC unless renewed)")


def blocking(leases: list[Lease], mine: str) -> list[Lease] | None:
    """The other runs' leases in force, judged at the store's time of our own lease's write (all
    read from one listing): any one of them means wait. None when our own is not listed: nothing
    can be judged, and nobody else could see us either."""
    own = next((lease for lease in leases if lease.key == mine), None)
    if own is None or own.stored_at is None:
        return None
    return [lease for lease in leases if lease.key != mine and lease.in_force(own.stored_at)]


def lapsed(leases: list[Lease], mine: str) -> list[Lease]:
    """The other leases of that listing past their TTL and margin: left by killed runs, whose holders
    (past their own deadline) never write them again; the next holder removes them."""
    live = blocking(leases, mine)
    return [] if live is None else [lease for lease in leases if lease.key != mine and lease not in live]


def holder_deadline(write_started: float, ttl_s: int) -> float:
    """Until when (the holder's monotonic clock) a write begun at `write_started` keeps the lease its own."""
    return write_started + ttl_s - SKEW_S


def renewal_delay(ttl_s: int, last_failed: bool) -> float:
    """Renew every third of the TTL; after a failure, sooner, until the deadline."""
    return min(RETRY_RENEWAL_S, ttl_s / 3) if last_failed else ttl_s / 3
