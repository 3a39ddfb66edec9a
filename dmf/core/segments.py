"""Commit-log segments as a batch holds them: as Cassandra wrote them, or gzip-compressed as
`<segment>.gz` with the segment's own size and SHA-256 in the batch manifest, so that a restore
gives back the exact file Cassandra wrote and checks it before anything replays it.

Segments compress 2-2.5x on event-like rows and far more when repetitive (bench/commitlog_compression.py);
SSTables are compressed by Cassandra already, so only segments are.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from dmf.core.errors import LayoutError, quote
from dmf.core.manifest import FileEntry, Manifest

SEGMENTS_COMPRESSED = "segments_compressed"  # manifest `extra`: stored file → {"segment", "size", "sha256"}
SEGMENT_NAME = re.compile(r"CommitLog-\d+-\d+\.log")
GZIP_SUFFIX = ".gz"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ShippedSegment:
    entry: FileEntry  # the stored file, as the batch's manifest lists it
    segment: str      # the segment's name, as Cassandra wrote it
    size: int         # the segment's own size and SHA-256 (the stored file's are the entry's)
    sha256: str
    compressed: bool

    @property
    def stored(self) -> str:
        return self.entry.path


def compressed_name(segment: str) -> str:
    return segment + GZIP_SUFFIX


def compressed_record(segment: str, size: int, sha256: str) -> dict:
    """The manifest `extra` entry of one compressed segment, keyed by compressed_name(segment)."""
    return {"segment": segment, "size": size, "sha256": sha256}


def shipped_segments(batch: Manifest) -> list[ShippedSegment]:
    """The batch's segments. What the manifest says of a compressed one is checked before it can
    become a local file name or be trusted as a checksum (a bucket is not trusted input)."""
    compressed = batch.extra.get(SEGMENTS_COMPRESSED, {})
    if not isinstance(compressed, dict):
        raise LayoutError(f"{batch.set.manifest_key}: {SEGMENTS_COMPRESSED} is not a mapping")
    found = []
    for entry in batch.files:
        record = compressed.get(entry.path)
        if record is None:  # as Cassandra wrote it: what a client-side encrypted entry decrypts to
            own = entry.plain or entry
            found.append(ShippedSegment(entry, entry.path, own.size, own.sha256, False))
            continue
        segment, size, sha256 = (record.get(k) for k in ("segment", "size", "sha256")) \
            if isinstance(record, dict) else (None, None, None)
        if (not isinstance(segment, str) or not SEGMENT_NAME.fullmatch(segment)
                or entry.path != compressed_name(segment) or not isinstance(size, int) or size < 0
                or not isinstance(sha256, str) or not _SHA256.fullmatch(sha256)):
            raise LayoutError(f"{batch.set.manifest_key}: malformed compression record for {quote(entry.path)}")
        found.append(ShippedSegment(entry, segment, size, sha256, True))
    return found


def archiving_problem(properties: str) -> str | None:
    """Why a node with this commitlog_archiving.properties archives no segment (None: it does): with no
    archive_command, Cassandra keeps its segments to itself and shipping would find nothing, silently,
    for ever (a replay killed while the file was rewritten in place could leave it so)."""
    for line in properties.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, _, value = line.partition("=") if "=" in line else line.partition(":")
        if key.strip() == "archive_command":
            return None if value.strip() else "its archive_command is empty"
    return "it has no archive_command"


# A throttled batch is cut to what its upload limit sends in this time, so that it is sealed well
# before dmf.core.sweep.seal_deadline (100 min); the rest go in the next run's batch.
SHIP_WITHIN = timedelta(hours=1)


def fitting(sizes: Sequence[int], max_mib_s: float | None, within: timedelta = SHIP_WITHIN) -> int:
    """How many of the leading segments (oldest first) one batch takes: all when uploads are not
    limited, else those whose bytes the limit sends within `within`, and at least one."""
    if max_mib_s is None:
        return len(sizes)
    budget, total = max_mib_s * 2**20 * within.total_seconds(), 0
    for count, size in enumerate(sizes):
        total += size
        if total > budget:
            return max(count, 1)
    return len(sizes)
