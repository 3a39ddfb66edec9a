"""The cluster lease in the bucket (pure): one writing run per cluster, whichever Prefect server runs it.

    leases/<cluster>/<acquired_ts>-<token>.json    {"holder", "acquired_at", "expires_at"}

S3-compatible stores do not all enforce conditional writes (s3proxy accepts `If-None-Match: *` and
ignores it), so the lease rests on write-then-list instead: a run writes its own lease object,
then lists the cluster's leases, and proceeds only if no other unexpired lease is there; otherwise
it deletes its own and tries again later. With read-after-write consistent listings (AWS S3 since
2020, s3proxy, MinIO, Ceph), of two runs racing, at least the later-listing one sees the other,
so two never both proceed (both may back off; jittered retries break the tie). A holder renews
its lease's expiry while it runs; a crashed holder's lease expires.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from dmf.core.errors import InputError, LayoutError, quote
from dmf.core.timestamps import format_ts, parse_ts

LEASES = "leases"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def cluster_slug(cluster_name: str) -> str:
    """A key-safe name for a Cassandra cluster_name ('Test Cluster' → 'Test_Cluster-<hash>'): the
    hash keeps names that differ only in replaced characters apart."""
    digest = hashlib.sha256(cluster_name.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', cluster_name)[:64]}-{digest}"


def leases_prefix(cluster_name: str) -> str:
    return f"{LEASES}/{cluster_slug(cluster_name)}/"


@dataclass(frozen=True)
class Lease:
    key: str
    holder: str          # what runs: a Prefect flow run, or a process on a host
    acquired_at: datetime
    expires_at: datetime

    @classmethod
    def new(cls, cluster_name: str, holder: str, token: str, now: datetime, ttl_s: int) -> Lease:
        key = f"{leases_prefix(cluster_name)}{format_ts(now)}-{token}.json"
        return cls(key, holder, now, now + timedelta(seconds=ttl_s))

    def renewed(self, now: datetime, ttl_s: int) -> Lease:
        return Lease(self.key, self.holder, self.acquired_at, now + timedelta(seconds=ttl_s))

    def to_json(self) -> bytes:
        return json.dumps({"holder": self.holder, "acquired_at": format_ts(self.acquired_at),
                           "expires_at": format_ts(self.expires_at)}).encode()

    @classmethod
    def from_json(cls, key: str, data: bytes) -> Lease:
        try:
            doc = json.loads(data)
            return cls(key, str(doc["holder"]), parse_ts(doc["acquired_at"]), parse_ts(doc["expires_at"]))
        except (ValueError, KeyError, TypeError, InputError) as exc:
            raise LayoutError(f"lease {quote(key)} is not a dmf lease: {exc}") from None

    def describe(self) -> str:
        return (f"{self.holder} holds it since {format_ts(self.acquired_at)} UTC "
                f"(until {format_ts(self.expires_at)} UTC unless renewed)")


def blocking(leases: list[Lease], mine: str, now: datetime) -> list[Lease]:
    """The other runs' leases that are still in force at `now`: any one of them means wait."""
    return [lease for lease in leases if lease.key != mine and lease.expires_at > now]
