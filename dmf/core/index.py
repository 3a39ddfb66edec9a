"""The catalog index: per snapshot prefix, one object summarising its sets' manifests, so that
`backup list` reads one object per snapshot instead of one per set.

    <snapshot_ts>/catalog.json   {"format": 1, "snapshot_ts": …, "sets": {<set prefix below the snapshot>: entry}}
    <snapshot_ts>/closed.json    the same, plus "nodes": the node prefixes below the snapshot, once it is closed

An entry holds what listing a set needs of its manifest (SetSummary), or why the manifest could not
be read, with the manifest object's ETag and size. The bucket stays the source of truth: both objects
are derived, written after the manifests they summarise, and rebuilt from the manifests when missing
or malformed. catalog.json is checked entry by entry against a listing of the snapshot: by the
manifest's stamp where the store lists manifests beside folded data (the '-' delimiter), else by the
set's prefix (a '/' walk: manifests are written once, and dmf deletes an index before any manifest
under it). A set the index lacks is read.

A closed snapshot is one no run writes to any more (closable below): it then gets closed.json, which
a listing trusts without listing its sets, checking only its node prefixes. Any manifest written
under a snapshot deletes its closed.json (a run that resolved an old chain long ago), and a purge
deletes both objects before the manifests they summarise. Only listings write them (lazily, where
they changed). Pure: the listing, reads and writes are dmf.repository's.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from dmf.core.catalog import Catalog, SetInfo, SetSummary
from dmf.core.errors import InputError, LayoutError
from dmf.core.keys import MANIFEST_NAME, SetRef, parse_set_prefix, set_prefix_of, snapshot_prefix
from dmf.core.manifest import Manifest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts, parse_ts

INDEX_FORMAT = 1
# A snapshot closes this long after a newer full of its chain's target and hosts completed: a run
# that resolved the old chain just before (a shipping run between its lookup and its seal) is done by then.
CLOSE_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class ManifestStamp:
    """A manifest object as a listing shows it: another stamp means another manifest."""

    etag: str
    size: int


@dataclass(frozen=True)
class IndexEntry:
    stamp: ManifestStamp
    summary: SetSummary | None  # None: the manifest is malformed, and `problem` says how
    problem: str = ""


@dataclass
class SnapshotListing:
    """What a listing of one snapshot prefix shows: every set with any object, and each manifest's stamp
    when `stamped` (a '/' walk sees set prefixes only). Keyed by set prefix, so a set is parsed once
    however many of its keys are listed."""

    stamped: bool = True
    sets: dict[str, SetRef] = field(default_factory=dict)
    manifests: dict[str, ManifestStamp] = field(default_factory=dict)
    foreign: set[str] = field(default_factory=set)  # prefixes outside the layout: never listed as sets

    def add(self, key: str, stamp: ManifestStamp | None = None) -> None:
        """A listed object (with its stamp) or common prefix (without)."""
        prefix = set_prefix_of(key)
        if prefix is None or prefix in self.foreign:
            return
        if prefix not in self.sets:
            try:
                self.sets[prefix] = parse_set_prefix(prefix)
            except LayoutError:
                self.foreign.add(prefix)
                return
        if stamp is not None and key == prefix + MANIFEST_NAME:
            self.manifests[prefix] = stamp


def summarise(ref: SetRef, data: bytes) -> SetInfo:
    """A set from its manifest's bytes: complete with its summary, or, when the manifest is malformed,
    incomplete with the problem (one bad manifest must not hide the rest of the history)."""
    try:
        manifest = Manifest.from_json(data, expected=ref)
        DbTarget.parse(manifest.db_target or None)  # listing filters by it
    except (LayoutError, InputError) as exc:
        return SetInfo(ref, problem=f"{ref.manifest_key}: {exc}")
    return SetInfo(ref, manifest)


def reconcile(entries: Mapping[str, IndexEntry], listing: SnapshotListing) -> tuple[dict[str, IndexEntry], list[str]]:
    """The entries that still hold, and the set prefixes whose manifest must be read. Stamped: entries
    whose manifest is listed with the same stamp hold; new and changed manifests are read. Unstamped:
    entries whose set is listed hold; every other listed set is read (one in flight or failed has no
    manifest yet, and is read again next time)."""
    if listing.stamped:
        valid = {prefix: entry for prefix, entry in entries.items() if listing.manifests.get(prefix) == entry.stamp}
        return valid, sorted(prefix for prefix in listing.manifests if prefix not in valid)
    valid = {prefix: entry for prefix, entry in entries.items() if prefix in listing.sets}
    return valid, sorted(prefix for prefix in listing.sets if prefix not in valid)


def closable(catalog: Catalog, now: datetime, settle: timedelta = CLOSE_AFTER) -> set[datetime]:
    """The snapshots no run writes to any more: every set complete, and a later complete full of the
    same db-target and hosts finished at least `settle` ago. Increments then go under that full (the
    seed's rule), and so does commit-log shipping (the newest complete full including the host)."""
    newest_settled: dict[tuple[str, frozenset[str]], datetime] = {}
    for full in catalog.fulls:
        if full.complete and max(s.created_at for s in full.summaries) <= now - settle:
            key = (full.db_target, frozenset(full.hosts))
            newest_settled[key] = max(full.snapshot_ts, newest_settled.get(key, full.snapshot_ts))
    unfinished = {g.snapshot_ts for g in catalog.all_groups() if not all(i.complete for i in g.sets.values())}
    return {full.snapshot_ts for full in catalog.fulls
            if full.complete and full.snapshot_ts not in unfinished
            and newest_settled.get((full.db_target, frozenset(full.hosts)), full.snapshot_ts) > full.snapshot_ts}


def set_infos(listing: SnapshotListing, entries: Mapping[str, IndexEntry]) -> list[SetInfo]:
    """Every listed set; complete when its manifest has a valid entry with a summary."""
    infos = []
    for prefix, ref in listing.sets.items():
        entry = entries.get(prefix)
        infos.append(SetInfo(ref) if entry is None else SetInfo(ref, summary=entry.summary, problem=entry.problem))
    return infos


def format_index(snapshot_ts: datetime, entries: Mapping[str, IndexEntry], nodes: Collection[str] | None = None) -> bytes:
    """catalog.json; closed.json when the snapshot's node prefixes (`nodes`) are given."""
    top = snapshot_prefix(snapshot_ts)
    sets = {}
    for prefix, entry in sorted(entries.items()):
        body: dict = {"etag": entry.stamp.etag, "size": entry.stamp.size}
        if entry.summary is None:
            body["problem"] = entry.problem
        else:
            s = entry.summary
            body.update(host=s.host, host_id=s.host_id, created_at=format_ts(s.created_at), db_target=s.db_target,
                        hosts=list(s.hosts), files=s.files, bytes=s.bytes)
        sets[prefix.removeprefix(top)] = body
    body: dict = {"format": INDEX_FORMAT, "snapshot_ts": format_ts(snapshot_ts)}
    if nodes is not None:
        body["nodes"] = sorted(node.removeprefix(top) for node in nodes)
    body["sets"] = sets
    return json.dumps(body, separators=(",", ":")).encode()


def _text(body: dict, name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not text")
    return value


def _count(body: dict, name: str) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"{name} is not a count")
    return value


def _entry(body: dict) -> IndexEntry:
    stamp = ManifestStamp(_text(body, "etag"), _count(body, "size"))
    if "problem" in body:
        return IndexEntry(stamp, None, _text(body, "problem"))
    return IndexEntry(stamp, _summary(body))


def _summary(body: dict) -> SetSummary:
    hosts = body["hosts"]
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise TypeError("hosts is not a list of text")
    return SetSummary(
        _text(body, "host"), _text(body, "host_id"), parse_ts(_text(body, "created_at"), name="created_at"),
        _checked_target(_text(body, "db_target")), _shared(tuple(hosts)), _count(body, "files"), _count(body, "bytes"))


@lru_cache(maxsize=1024)
def _shared(hosts: tuple[str, ...]) -> tuple[str, ...]:
    """One tuple per distinct host set: a year of sets repeats a handful of them."""
    return hosts


@lru_cache(maxsize=1024)
def _checked_target(text: str) -> str:
    """Checked as summarise() checks a manifest's; once per distinct target, not per entry."""
    DbTarget.parse(text or None)
    return text


def parse_index(data: bytes, snapshot_ts: datetime) -> dict[str, IndexEntry]:
    """The entries of a snapshot's index object, by set prefix; LayoutError when it is not one (the
    caller then rebuilds it: the index is never the only copy of anything)."""
    top = snapshot_prefix(snapshot_ts)
    try:
        return {top + relative: _entry(entry) for relative, entry in _body(data, snapshot_ts)["sets"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
        raise LayoutError(f"malformed catalog index of snapshot {format_ts(snapshot_ts)}: {exc}") from None


def _body(data: bytes, snapshot_ts: datetime) -> dict:
    body = json.loads(data)
    if body.get("format") != INDEX_FORMAT or body.get("snapshot_ts") != format_ts(snapshot_ts):
        raise ValueError(f"format {body.get('format')!r} of snapshot {body.get('snapshot_ts')!r}")
    return body


def parse_closed(data: bytes, snapshot_ts: datetime) -> tuple[frozenset[str], list[SetInfo]]:
    """A closed snapshot's node prefixes and sets; LayoutError as parse_index, also for a set prefix
    outside the layout (its sets are used without a listing, so each is checked here)."""
    top = snapshot_prefix(snapshot_ts)
    try:
        body = _body(data, snapshot_ts)
        listed = body["nodes"]
        if not isinstance(listed, list) or not all(isinstance(n, str) and n.endswith("/") for n in listed):
            raise TypeError("nodes is not a list of prefixes")
        # Every set of a closed chain is complete: its entry is a summary (no problem), and its
        # manifest's stamp is not needed (the summary is trusted whole, never merged).
        return (frozenset(top + node for node in listed),
                [SetInfo(parse_set_prefix(top + relative), summary=_summary(entry))
                 for relative, entry in body["sets"].items()])
    except (ValueError, KeyError, TypeError, AttributeError, InputError, LayoutError) as exc:
        raise LayoutError(f"malformed closed chain summary of snapshot {format_ts(snapshot_ts)}: {exc}") from None
