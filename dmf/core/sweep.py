"""What a crashed run leaves behind, and which of it a sweep may remove (pure).

Sweeps run only while the sweeping run holds the cluster's lease, so no other dmf run of the
cluster is writing: every `dmf-<ts>` snapshot on its nodes is a leftover. Objects in the bucket
are shared with other clusters, and commit-log shipping takes no lease, so they go only past a
grace period, never shorter than MIN_GRACE. A shipping run seals its batch only before
`seal_deadline`, which is MIN_GRACE less a margin after the batch began: a sweep that picked the
batch (older than its grace by the sweep's clock) can then never race its manifest, and a batch
swept anyway fails its seal (the objects are re-checked first) and keeps its segments on the node.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from dmf.core.catalog import CLOCK_SKEW_ALLOWANCE
from dmf.core.errors import InputError, LayoutError
from dmf.core.keys import REGISTRY, parse_key
from dmf.core.timestamps import format_ts, parse_ts

SNAPSHOT_TAG = re.compile(r"dmf-[0-9]{14}")
MIN_GRACE = timedelta(hours=2)
# The sweeping and the shipping clocks may differ by CLOCK_SKEW_ALLOWANCE, and the manifest's PUT
# (with its retries) lands a while after the check: the other half of the margin.
SEAL_MARGIN = 2 * CLOCK_SKEW_ALLOWANCE


def check_grace(minutes: int, option: str = "--grace-minutes") -> timedelta:
    """The grace a sweep waits before removing what looks abandoned; below MIN_GRACE it could remove
    the objects of a run still uploading (a shipping run, or another cluster's backup)."""
    floor = int(MIN_GRACE.total_seconds() // 60)
    if minutes < floor:
        raise InputError(f"{option} {minutes} is below the floor of {floor}: a sweep that soon could remove "
                         "the objects of a run still uploading")
    return timedelta(minutes=minutes)


def seal_deadline(began: datetime) -> datetime:
    """The latest a run that began at `began` may write its manifest without taking a lease."""
    return began + MIN_GRACE - SEAL_MARGIN


def snapshot_tag(now: datetime) -> str:
    """The tag of the snapshot a backup taken at `now` makes on every node."""
    return f"dmf-{format_ts(now)}"


def leftover_snapshot_tags(snapshot_dirs: Iterable[str], keep: str | None = None) -> list[str]:
    """The dmf snapshot tags among `<data>/<ks>/<table>/snapshots/<tag>` folders, but `keep`
    (the running backup's own); operators' own snapshots are never dmf's to clear."""
    tags = {posixpath.basename(d.rstrip("/")) for d in snapshot_dirs}
    return sorted(t for t in tags if SNAPSHOT_TAG.fullmatch(t) and t != keep)


def key_time(key: str) -> datetime | None:
    """When the run that writes `key` began, read from the key itself: its set's time, or the
    registry backup's; None for a key that is not dmf's."""
    parts = key.split("/")
    if parts[0] == REGISTRY:
        try:
            return parse_ts(parts[1], name="registry time") if len(parts) > 2 else None
        except InputError:
            return None
    try:
        return parse_key(key).set.time
    except LayoutError:
        return None


def stale_uploads(uploads: Iterable[tuple[str, str, datetime]], now: datetime,
                  grace: timedelta) -> list[tuple[str, str]]:
    """(key, upload_id) of open multipart uploads of dmf keys whose run began before `now - grace`:
    no run lasts that long, so they belong to a run that died (and S3 bills their parts until aborted).
    The run's time comes from the key, not from the upload's Initiated, which stores report
    differently (s3proxy answers with the time of the listing)."""
    stale = []
    for key, upload_id, _initiated in uploads:
        began = key_time(key)
        if began is not None and began < now - grace:
            stale.append((key, upload_id))
    return stale
